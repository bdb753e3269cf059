//! `--device` and `--precision`: where a run computes, whether that device answers, and the
//! burn backend that runs generic work there.
//!
//! The GPU devices are burn's cubecl backends: `cuda` (NVIDIA, feature `cuda`) and `wgpu`
//! (Vulkan, Metal or DirectX 12, feature `wgpu`), the same burn-cubecl kernels, fusion,
//! autotune and birads' own kernels compiled for either. A build without a device's feature
//! says how to get it instead of failing deep in a runtime.

use burn::tensor::backend::AutodiffBackend;
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    /// NVIDIA GPU (build with `--features cuda`).
    Cuda,
    /// Any GPU through burn's wgpu backend: Vulkan, Metal or DirectX 12 (build with
    /// `--features wgpu`; f32 only).
    Wgpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    F32,
    /// Everything in bfloat16: weights, activations, gradients and optimiser state (CUDA only).
    Bf16,
    /// Mixed precision as PyTorch AMP does it: f32 weights and optimiser state, convolutions
    /// and linear layers computed in bfloat16, normalisation and losses in f32 (burn engine;
    /// on the CPU it runs, slowly, for checking).
    Amp,
}

impl DeviceArg {
    /// The name `--device` takes.
    pub fn name(self) -> &'static str {
        match self {
            DeviceArg::Cpu => "cpu",
            DeviceArg::Cuda => "cuda",
            DeviceArg::Wgpu => "wgpu",
        }
    }

    /// Whether PyTorch has this device, for the benchmarks' side-by-side figures (it has no
    /// wgpu one).
    pub fn in_pytorch(self) -> bool {
        self != DeviceArg::Wgpu
    }

    /// A GPU, where only burn's engine runs.
    pub fn is_gpu(self) -> bool {
        self != DeviceArg::Cpu
    }

    /// Whether a run on this device in `precision` can start: a precision it computes in
    /// ([`supported`]) and a device that answers ([`DeviceArg::ready`]).
    pub fn ready_for(self, precision: PrecisionArg) -> anyhow::Result<()> {
        supported(self, precision)?;
        self.ready()
    }

    /// A clear error instead of a panic deep in a GPU runtime when the device cannot be used:
    /// a build without its feature, no driver, or no device.
    pub fn ready(self) -> anyhow::Result<()> {
        match self {
            DeviceArg::Cpu => Ok(()),
            DeviceArg::Cuda => cuda_ready(),
            DeviceArg::Wgpu => wgpu_ready(),
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_ready() -> anyhow::Result<()> {
    anyhow::bail!(birads_model::not_built("cuda"))
}

#[cfg(feature = "cuda")]
fn cuda_ready() -> anyhow::Result<()> {
    // cudarc loads the driver library on first use and panics when it is missing.
    // SAFETY: dlopen with a valid C string; the handle is closed again at once.
    let driver = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY) };
    if driver.is_null() {
        anyhow::bail!(
            "--device cuda: no NVIDIA driver here (libcuda.so.1 not found; is this a GPU machine?)"
        );
    }
    // SAFETY: the handle came from dlopen above.
    unsafe { libc::dlclose(driver) };
    if answers::<birads_model::Cuda>() {
        Ok(())
    } else {
        anyhow::bail!("--device cuda: the NVIDIA driver is here but no CUDA device answered")
    }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_ready() -> anyhow::Result<()> {
    anyhow::bail!(birads_model::not_built("wgpu"))
}

#[cfg(feature = "wgpu")]
fn wgpu_ready() -> anyhow::Result<()> {
    if answers::<birads_model::Wgpu>() {
        Ok(())
    } else {
        anyhow::bail!(
            "--device wgpu: no GPU answered (wgpu found no Vulkan, Metal or DirectX 12 adapter; \
             without a GPU, Mesa's software Vulkan driver, lavapipe, is one)"
        )
    }
}

/// Whether `B`'s default device answers: a value sent to it comes back. The runtimes report a
/// missing device by panicking, so the panic is caught (and not printed). No kernel runs, so
/// the probe holds on `scripts/cuda_dry_run.sh`'s stand-in driver too, which runs none.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn answers<B: burn::tensor::backend::Backend>() -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        use burn::prelude::*;
        use burn::tensor::DType;
        // An explicit type: the device's default float type stays unset for the run's own
        // precision to claim (`birads_model::precision`).
        let data = TensorData::new(vec![1.0f32], [1]);
        let t = Tensor::<B, 1>::from_data(data, (&Default::default(), DType::F32));
        t.into_data().to_vec::<f32>().ok()
    });
    std::panic::set_hook(hook);
    matches!(probe, Ok(Some(v)) if v == [1.0])
}

/// Work generic over the autodiff backend (training, its benchmark, the device check):
/// `on_backend` runs it on the backend that `--device` and `--precision` select.
pub trait OnBackend {
    type Output;
    fn run<B: AutodiffBackend>(self) -> anyhow::Result<Self::Output>;
}

/// Whether `device` runs `precision`: the CPU all but bf16, wgpu f32 only (it has no bf16,
/// and f16 products would need loss scaling).
fn supported(device: DeviceArg, precision: PrecisionArg) -> anyhow::Result<()> {
    match (device, precision) {
        (DeviceArg::Cpu, PrecisionArg::Bf16) => anyhow::bail!(
            "--precision bf16 needs --device cuda (burn's CPU backend trains in f32); \
             --precision amp runs on the CPU"
        ),
        (DeviceArg::Wgpu, PrecisionArg::Bf16 | PrecisionArg::Amp) => anyhow::bail!(
            "--device wgpu computes in f32 (wgpu has no bfloat16); bf16 and amp need --device cuda"
        ),
        _ => Ok(()),
    }
}

/// Run `work` on the backend for `device` and `precision` (`unfused`: the GPU backend without
/// kernel fusion), with autocast open on this thread for amp.
pub fn on_backend<W: OnBackend>(
    device: DeviceArg,
    precision: PrecisionArg,
    unfused: bool,
    work: W,
) -> anyhow::Result<W::Output> {
    let _amp = (precision == PrecisionArg::Amp)
        .then(|| birads_model::amp::autocast(burn::tensor::FloatDType::BF16));
    supported(device, precision)?;
    match device {
        DeviceArg::Cpu => run_on::<birads_model::CpuTrain, W>(work),
        DeviceArg::Cuda => on_cuda(precision, unfused, work),
        DeviceArg::Wgpu => on_wgpu(unfused, work),
    }
}

#[cfg(feature = "cuda")]
fn on_cuda<W: OnBackend>(
    precision: PrecisionArg,
    unfused: bool,
    work: W,
) -> anyhow::Result<W::Output> {
    use birads_model::{Cuda, CudaBf16, CudaUnfused, CudaUnfusedBf16};
    use burn::backend::Autodiff;
    match (precision, unfused) {
        (PrecisionArg::Bf16, true) => run_on::<Autodiff<CudaUnfusedBf16>, W>(work),
        (PrecisionArg::Bf16, false) => run_on::<Autodiff<CudaBf16>, W>(work),
        (_, true) => run_on::<Autodiff<CudaUnfused>, W>(work),
        (_, false) => run_on::<Autodiff<Cuda>, W>(work),
    }
}

#[cfg(not(feature = "cuda"))]
fn on_cuda<W: OnBackend>(_: PrecisionArg, _: bool, _: W) -> anyhow::Result<W::Output> {
    anyhow::bail!(birads_model::not_built("cuda"))
}

/// wgpu with fusion only: what fusion buys is measured on CUDA (`bench train --no-fusion`),
/// and a second wgpu backend would compile all the generic training code once more.
#[cfg(feature = "wgpu")]
fn on_wgpu<W: OnBackend>(unfused: bool, work: W) -> anyhow::Result<W::Output> {
    if unfused {
        anyhow::bail!("--no-fusion runs on --device cuda; wgpu always fuses");
    }
    run_on::<burn::backend::Autodiff<birads_model::Wgpu>, W>(work)
}

#[cfg(not(feature = "wgpu"))]
fn on_wgpu<W: OnBackend>(_: bool, _: W) -> anyhow::Result<W::Output> {
    anyhow::bail!(birads_model::not_built("wgpu"))
}

/// Run `work` on `B` once `B`'s device makes tensors of `B`'s float type: burn fixes one
/// float type per device for the whole process, and a bf16 backend on a device that f32
/// touched first would run in f32 (`birads_model::precision`).
fn run_on<B: AutodiffBackend, W: OnBackend>(work: W) -> anyhow::Result<W::Output> {
    birads_model::precision::claim_own::<B>(&Default::default())?;
    work.run::<B>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_device_takes_the_precisions_it_computes_in() {
        use DeviceArg::*;
        use PrecisionArg::*;
        let ok = |d, p| supported(d, p).is_ok();
        assert!(ok(Cpu, F32) && ok(Cpu, Amp) && !ok(Cpu, Bf16));
        assert!(ok(Cuda, F32) && ok(Cuda, Amp) && ok(Cuda, Bf16));
        assert!(ok(Wgpu, F32) && !ok(Wgpu, Amp) && !ok(Wgpu, Bf16));
        let e = supported(Wgpu, Amp).unwrap_err().to_string();
        assert!(e.contains("--device wgpu computes in f32"), "{e}");
    }

    #[test]
    fn pytorch_is_compared_on_the_devices_it_has() {
        assert!(DeviceArg::Cpu.in_pytorch() && DeviceArg::Cuda.in_pytorch());
        assert!(!DeviceArg::Wgpu.in_pytorch());
    }

    #[test]
    fn names_are_the_ones_the_command_line_takes() {
        for d in DeviceArg::value_variants() {
            let parsed = DeviceArg::from_str(d.name(), false).unwrap();
            assert_eq!(parsed, *d);
        }
    }
}
