//! birads' AdamW and Adam (`birads_model::adamw`): on the CPU each is burn's step by step,
//! and its records are burn's records in both directions (a run resumes across the two); on a
//! cubecl backend (`--features wgpu`, Mesa's software Vulkan) their update kernel equals the
//! formula computed on the host, with contiguous, permuted and gapped tensors, in f32 and f16,
//! and a few training steps with the kernel equal burn's on the same backend.

use birads_model::adamw::{self, Adam, AdamW};
use birads_model::CpuTrain;
use burn::nn::{Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;

const WEIGHT_DECAY: f32 = 0.05;
const EPSILON: f32 = 1e-8;
/// A learning rate per step, as a schedule changes it.
const RATES: [f64; 4] = [1e-2, 5e-3, 2e-3, 1e-3];

/// A linear layer with its weights drawn (burn draws them lazily, and a clone of an undrawn
/// layer would draw its own).
fn model<B: Backend>(device: &B::Device) -> Linear<B> {
    let m = LinearConfig::new(7, 5).init(device);
    values(&m);
    m
}

/// The gradients of a squared loss of `model` on a fixed batch.
fn grads<B: AutodiffBackend>(model: &Linear<B>, step: usize) -> GradientsParams {
    let device = model.weight.device();
    let x = Tensor::<B, 1, Int>::arange(0..(3 * 7) as i64, &device)
        .float()
        .reshape([3, 7])
        .div_scalar(10.0 + step as f64)
        .sin();
    let loss = model.forward(x).powf_scalar(2.0).mean();
    GradientsParams::from_grads(loss.backward(), model)
}

/// The weight and bias of `model`.
fn values<B: Backend>(model: &Linear<B>) -> Vec<f32> {
    let mut v: Vec<f32> = model
        .weight
        .val()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap();
    let bias = model.bias.as_ref().expect("a bias").val();
    v.extend(bias.into_data().convert::<f32>().to_vec::<f32>().unwrap());
    v
}

/// `model` after `steps` of `optim`, from step `from` of the schedule.
fn train<B: AutodiffBackend, O: Optimizer<Linear<B>, B>>(
    mut model: Linear<B>,
    optim: &mut O,
    from: usize,
    steps: usize,
) -> Linear<B> {
    for (i, &lr) in RATES.iter().enumerate().skip(from).take(steps) {
        let g = grads(&model, i);
        model = optim.step(lr, model, g);
    }
    model
}

fn burns<B: AutodiffBackend>() -> impl Optimizer<Linear<B>, B> {
    AdamWConfig::new()
        .with_weight_decay(WEIGHT_DECAY)
        .with_epsilon(EPSILON)
        .init::<B, Linear<B>>()
}

fn burns_adam<B: AutodiffBackend>() -> impl Optimizer<Linear<B>, B> {
    AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(WEIGHT_DECAY)))
        .with_epsilon(EPSILON)
        .init::<B, Linear<B>>()
}

/// On the CPU, `own()` takes the same steps as `theirs()` exactly, and each one's record
/// loaded into the other continues an uninterrupted run.
fn same_steps_and_records<O, T>(own: impl Fn() -> O, theirs: impl Fn() -> T)
where
    O: Optimizer<Linear<CpuTrain>, CpuTrain>,
    T: Optimizer<Linear<CpuTrain>, CpuTrain>,
{
    let device = Default::default();
    CpuTrain::seed(&device, 3);
    let start = model::<CpuTrain>(&device);
    let (mut ours, mut burns) = (own(), theirs());
    let a = train(start.clone(), &mut ours, 0, 2);
    let b = train(start.clone(), &mut burns, 0, 2);
    assert_eq!(values(&a), values(&b));
    assert_ne!(values(&a), values(&start), "the steps moved the weights");

    // Each optimiser's record loaded into the other: the moments and the step count go along,
    // so the next steps are those of an uninterrupted run.
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let own_bytes = recorder.record(ours.to_record(), ()).unwrap();
    let their_bytes = recorder.record(burns.to_record(), ()).unwrap();
    let mut theirs_resumed = theirs().load_record(recorder.load(own_bytes, &device).unwrap());
    let mut own_resumed = own().load_record(recorder.load(their_bytes, &device).unwrap());
    let uninterrupted = train(a.clone(), &mut ours, 2, 2);
    let via_burn = train(a.clone(), &mut theirs_resumed, 2, 2);
    let via_own = train(b, &mut own_resumed, 2, 2);
    assert_eq!(values(&via_burn), values(&uninterrupted));
    assert_eq!(values(&via_own), values(&uninterrupted));
    let restarted = train(a, &mut theirs(), 2, 2);
    assert_ne!(
        values(&restarted),
        values(&uninterrupted),
        "without the record the moments start again"
    );
    assert!(adamw::installed::<<CpuTrain as AutodiffBackend>::InnerBackend>().is_none());
}

#[test]
fn on_the_cpu_it_is_burns_adamw_and_records_go_both_ways() {
    type B = CpuTrain;
    same_steps_and_records(
        || AdamW::init::<B, Linear<B>>(WEIGHT_DECAY, EPSILON),
        burns::<B>,
    );
}

#[test]
fn on_the_cpu_its_adam_is_burns_adam_and_records_go_both_ways() {
    type B = CpuTrain;
    same_steps_and_records(
        || Adam::init::<B, Linear<B>>(WEIGHT_DECAY, EPSILON),
        burns_adam::<B>,
    );
}

#[cfg(feature = "wgpu")]
mod kernel {
    use super::*;
    use birads_model::adamw::cube::{update, Update};
    use birads_model::adamw::Scalars;
    use birads_model::cube::{self, float, primitive, Cube, Fused, Launch};
    use birads_model::gradcheck::difference;
    use burn::backend::wgpu::WgpuRuntime;
    use burn::backend::{Autodiff, Wgpu};
    use burn::module::AutodiffModule;
    use burn::tensor::{f16, DType, Distribution, FloatDType};

    /// Installing is global per backend: tests that install run one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    type Unfused = Cube<WgpuRuntime, f32, i32, u32>;
    type Half = Cube<WgpuRuntime, f16, i32, u32>;
    type HalfFused = Fused<WgpuRuntime, f16, i32, u32>;

    fn host<Bk: Backend, const D: usize>(t: &Tensor<Bk, D>) -> Vec<f32> {
        t.to_data().convert::<f32>().to_vec().unwrap()
    }

    /// How a tensor lies in memory.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Layout {
        Contiguous,
        /// Its dimensions in reverse order (a permutation of a contiguous tensor, as a
        /// convolution's weight gradient comes channels-last).
        Permuted,
        /// A slice of a wider tensor: gaps between its rows.
        Gapped,
    }
    use Layout::*;

    /// A tensor of `shape` on `B` with values in `[low, high)`, laid out as `layout`.
    fn input<B: Backend>(
        shape: [usize; 3],
        (low, high): (f64, f64),
        dtype: FloatDType,
        layout: Layout,
    ) -> Tensor<B, 3> {
        let [a, b, c] = shape;
        let random = |shape| {
            let cpu = Tensor::<birads_model::Cpu, 3>::random(
                shape,
                Distribution::Uniform(low, high),
                &Default::default(),
            );
            // (`from_data` gives the device's default precision, f32, on every backend.)
            Tensor::<B, 3>::from_data(cpu.into_data(), &Default::default()).cast(dtype)
        };
        match layout {
            Contiguous => random([a, b, c]),
            Permuted => random([c, b, a]).permute([2, 1, 0]),
            Gapped => random([a, b, c + 3]).narrow(2, 1, c),
        }
    }

    /// The update on the host in f32, in the kernel's order; the parameter rounded by `round`,
    /// the moments kept in f32.
    fn reference(
        p: &[f32],
        g: &[f32],
        moments: Option<(&[f32], &[f32])>,
        s: Scalars,
        round: fn(f32) -> f32,
    ) -> [Vec<f32>; 3] {
        let mut out = [vec![], vec![], vec![]];
        for i in 0..p.len() {
            let g = g[i] + p[i] * s.l2;
            let (mut m, mut v) = (g * s.factor_1, g * g * s.factor_2);
            if let Some((m0, v0)) = moments {
                m += m0[i] * s.beta_1;
                v += v0[i] * s.beta_2;
            }
            let delta = (m / s.correction_1) / ((v / s.correction_2).sqrt() + s.epsilon);
            out[0].push(round(p[i] * s.decay - delta * s.lr));
            out[1].push(m);
            out[2].push(v);
        }
        out
    }

    /// max |got − want| / max |want|; a value that is not finite fails the test.
    fn relative(got: &[f32], want: &[f32]) -> f64 {
        difference("", got, want).unwrap().relative
    }

    /// The layouts of p, g, m and v: all contiguous; a first step's parameter beside a
    /// channels-last gradient; the steps after it, where everything is laid out as the
    /// gradient; a gradient with gaps.
    const LAYOUTS: [[Layout; 4]; 4] = [
        [Contiguous; 4],
        [Contiguous, Permuted, Permuted, Permuted],
        [Permuted; 4],
        [Permuted, Gapped, Contiguous, Permuted],
    ];

    /// The kernel on `B` against `reference` within `limit` relative (per result, of its
    /// largest value), first and later steps, every case of `LAYOUTS`, in `dtype`.
    fn check<B: Launch>(dtype: FloatDType, round: fn(f32) -> f32, limit: f64) {
        // AdamW's decay, and Adam's penalty instead.
        for s in [
            AdamW::new(WEIGHT_DECAY, EPSILON).scalars(0.1, 7),
            Adam::new(WEIGHT_DECAY, EPSILON).scalars(0.1, 7),
        ] {
            check_with::<B>(s, dtype, round, limit);
        }
    }

    /// One case: the inputs on the device, and what the host computes from them.
    struct Case<B: Backend> {
        what: String,
        shape: [usize; 3],
        inputs: adamw::Item<Tensor<B, 3>>,
        want: [Vec<f32>; 3],
    }

    /// A parameter of `shape` laid out as `layouts`, with gradients in ±`gradient`, at its
    /// first step or a later one; the host's update of it by `s`.
    fn case<B: Backend>(
        shape: [usize; 3],
        gradient: f64,
        layouts: [Layout; 4],
        first: bool,
        (s, dtype, round): (Scalars, FloatDType, fn(f32) -> f32),
    ) -> Case<B> {
        let [lp, lg, lm, lv] = layouts;
        let p = input::<B>(shape, (-1.0, 1.0), dtype, lp);
        let g = input::<B>(shape, (-gradient, gradient), dtype, lg);
        let m = input::<B>(shape, (-0.05, 0.05), dtype, lm);
        let v = input::<B>(shape, (1e-4, 3e-3), dtype, lv);
        assert_eq!(g.dtype(), DType::from(dtype));
        let (hp, hg, hm, hv) = (host(&p), host(&g), host(&m), host(&v));
        let want = reference(&hp, &hg, (!first).then_some((&hm, &hv)), s, round);
        Case {
            what: format!(
                "{shape:?} g {gradient:e} {layouts:?} first {first} l2 {}",
                s.l2
            ),
            shape,
            inputs: adamw::Item {
                param: p,
                grad: g,
                moments: (!first).then_some([m, v]),
            },
            want,
        }
    }

    /// All of `cases` updated by one call of the kernel, each against the host within
    /// `limit`.
    fn update_all<B: Launch>(cases: Vec<Case<B>>, s: Scalars, dtype: FloatDType, limit: f64) {
        let (mut items, mut expected) = (vec![], vec![]);
        for Case {
            what,
            shape,
            inputs,
            want,
        } in cases
        {
            items.push(adamw::Item {
                param: primitive(inputs.param),
                grad: primitive(inputs.grad),
                moments: inputs.moments.map(|m| m.map(primitive)),
            });
            expected.push((what, shape, want));
        }
        let results = update::<B>(items, s);
        assert_eq!(results.len(), expected.len(), "an update per parameter");
        let dtypes = [DType::from(dtype), DType::F32, DType::F32];
        for (got, (what, shape, want)) in results.into_iter().zip(expected) {
            let got = got.map(float::<B, 3>);
            for (((name, got), want), dtype) in
                ["p", "m", "v"].iter().zip(&got).zip(&want).zip(dtypes)
            {
                assert_eq!(got.dtype(), dtype, "{name}");
                assert_eq!(got.dims(), shape, "{name}");
                let r = relative(&host(got), want);
                assert!(r <= limit, "{name} {what}: {r:e} > {limit:e}");
            }
        }
    }

    /// Every case in one call: parameters whose layouts and steps differ are updated in
    /// separate launches of the one operation, and each must come back as its own.
    fn check_with<B: Launch>(s: Scalars, dtype: FloatDType, round: fn(f32) -> f32, limit: f64) {
        // More values than one cube has threads; the moments as a few steps leave them;
        // gradients of ordinary size, and small ones, whose (1 − β₂)·g² f16 rounds to zero.
        let mut cases = vec![];
        for shape in [[3, 5, 2], [17, 9, 11]] {
            for gradient in [0.5, 1e-4] {
                for layouts in LAYOUTS {
                    for first in [true, false] {
                        cases.push(case::<B>(
                            shape,
                            gradient,
                            layouts,
                            first,
                            (s, dtype, round),
                        ));
                    }
                }
            }
        }
        update_all::<B>(cases, s, dtype, limit);
    }

    /// More parameters alike than one launch takes (8), of sizes from one value to more
    /// than a cube's threads: the launches split them, and every one is updated.
    #[test]
    fn many_parameters_split_over_launches() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let s = AdamW::new(WEIGHT_DECAY, EPSILON).scalars(0.1, 3);
        let shapes = (0..75).map(|i| [1 + i % 4, 1 + i % 7, 1 + (i * 13) % 29]);
        let cases = shapes
            .map(|shape| {
                case::<Unfused>(
                    shape,
                    0.5,
                    [Contiguous; 4],
                    false,
                    (s, FloatDType::F32, |x| x),
                )
            })
            .collect();
        update_all::<Unfused>(cases, s, FloatDType::F32, 1e-6);
    }

    /// f32: the formula's rounding, with room for the device contracting a product and a sum
    /// into one (fused multiply-add). f16: the parameter stored in f16 (2⁻¹¹ relative), the
    /// moments in f32 read back as f16 from a record, then as the kernel's f32 ones.
    #[test]
    fn the_update_kernel_equals_the_formula() {
        check::<Unfused>(FloatDType::F32, |x| x, 1e-6);
        check::<Wgpu>(FloatDType::F32, |x| x, 1e-6);
        let half = |x: f32| f16::from_f32(x).to_f32();
        check::<Half>(FloatDType::F16, half, 1e-3);
        check::<HalfFused>(FloatDType::F16, half, 1e-3);
        // f16 tensors on the f32 backend, as amp's products are.
        check::<Wgpu>(FloatDType::F16, half, 1e-3);
    }

    /// Four steps of a linear layer, with the learning rate changing and weight decay, as the
    /// trainer runs them: with the kernel installed as on CUDA, and with burn's AdamW.
    #[test]
    fn training_steps_with_the_kernel_equal_burns_adamw() {
        type B = Autodiff<Wgpu>;
        steps_agree(
            || AdamW::init::<B, Linear<B>>(WEIGHT_DECAY, EPSILON),
            burns::<B>,
        );
    }

    /// The same for Adam, the penalty added to the gradient.
    #[test]
    fn training_steps_with_the_kernel_equal_burns_adam() {
        type B = Autodiff<Wgpu>;
        steps_agree(
            || Adam::init::<B, Linear<B>>(WEIGHT_DECAY, EPSILON),
            burns_adam::<B>,
        );
    }

    /// The device check's two steps (`adamw::check`: 41 tensors, more than a launch takes) on
    /// wgpu with the kernel, through fusion, against burn's steps on the CPU.
    #[test]
    fn the_device_check_of_the_optimiser_passes_on_wgpu() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        cube::set::<Update, WgpuRuntime, f32, i32, u32>(true);
        for adam in [false, true] {
            let want = adamw::check::two_steps::<CpuTrain>(adam);
            let got = adamw::check::two_steps::<Autodiff<Wgpu>>(adam);
            let worst = adamw::check::worst(&got, &want).unwrap();
            assert!(worst <= 1e-5, "adam {adam}: {worst:e}");
        }
        cube::set::<Update, WgpuRuntime, f32, i32, u32>(false);
    }

    /// Four steps of `own()` with the kernel installed against `theirs()`, within 1e-6.
    fn steps_agree<O, T>(own: impl Fn() -> O, theirs: impl Fn() -> T)
    where
        O: Optimizer<Linear<Autodiff<Wgpu>>, Autodiff<Wgpu>>,
        T: Optimizer<Linear<Autodiff<Wgpu>>, Autodiff<Wgpu>>,
    {
        type B = Autodiff<Wgpu>;
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let device = Default::default();
        B::seed(&device, 5);
        let start = model::<B>(&device);
        cube::set::<Update, WgpuRuntime, f32, i32, u32>(true);
        assert!(adamw::installed::<Wgpu>().is_some());
        let ours = train(start.clone(), &mut own(), 0, 4);
        cube::set::<Update, WgpuRuntime, f32, i32, u32>(false);
        assert!(adamw::installed::<Wgpu>().is_none());
        let burns = train(start.clone(), &mut theirs(), 0, 4);
        let r = relative(&values(&ours.valid()), &values(&burns.valid()));
        assert!(r <= 1e-6, "{r:e}");
        assert!(
            relative(&values(&ours), &values(&start)) > 1e-3,
            "the steps moved the weights"
        );
    }
}
