//! A resumed low-precision run keeps its optimiser's moments as they were: with the update
//! kernel installed they are f32 whatever the parameters' type, and a record read back on a
//! bf16 device must not round them to bf16 (burn's float records come back in the device's
//! type). The CPU stands in for a bf16 GPU: its device is claimed bf16 (one test, its own
//! process), and a host update with the kernel's contract (`[p, g, m, v]` → `[p, m, v]`, f32
//! moments, the parameter in its own type) is installed in place of the cubecl kernel, which
//! `tests/adamw.rs` checks against the formula on wgpu.

#[path = "common/host_update.rs"]
mod host_update;

use birads_model::adamw::{self, AdamW, Optimiser, State};
use birads_model::precision::claim;
use birads_model::{Cpu, CpuTrain};
use burn::module::ParamId;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{DType, FloatDType};

type B = CpuTrain;
type Adaptor = Optimiser<AdamW, Linear<B>, B>;
const RATES: [f64; 4] = [1e-2, 5e-3, 2e-3, 1e-3];

fn train(mut model: Linear<B>, optim: &mut Adaptor, from: usize, steps: usize) -> Linear<B> {
    for (i, &lr) in RATES.iter().enumerate().skip(from).take(steps) {
        let x = Tensor::<B, 1, Int>::arange(0..21, &model.weight.device())
            .float()
            .reshape([3, 7])
            .div_scalar(10.0 + i as f64)
            .sin();
        let loss = model.forward(x).powf_scalar(2.0).mean();
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, g);
    }
    model
}

/// The weight's moments as `(type, values)`.
fn weight_moments(optim: &Adaptor, weight: ParamId) -> [(DType, Vec<f32>); 2] {
    let mut records = optim.to_record();
    let state: State<Cpu, 2> = records
        .remove(&weight)
        .expect("a weight state")
        .into_state();
    let m = state.momentum;
    [m.moment_1.0, m.moment_2.0].map(|t| {
        let dtype = t.dtype();
        (dtype, t.into_data().convert::<f32>().to_vec().unwrap())
    })
}

fn values(model: &Linear<B>) -> Vec<f32> {
    model
        .weight
        .val()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap()
}

/// Two steps, a record through bytes, two more: the moments read back are those saved, in
/// the type the step keeps them in, and the resumed run is the run that did not stop.
fn resume_keeps(moment_type: DType) {
    let device = Default::default();
    B::seed(&device, 5);
    let start = LinearConfig::new(7, 5).init::<B>(&device);
    assert_eq!(start.weight.val().dtype(), DType::BF16);
    let weight = start.weight.id;
    let mut optim = AdamW::init::<B, Linear<B>>(0.05, 1e-8);
    let a = train(start, &mut optim, 0, 2);
    let before = weight_moments(&optim, weight);
    assert!(before.iter().all(|(t, _)| *t == moment_type), "{before:?}");

    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(optim.to_record(), ()).unwrap();
    let mut resumed =
        AdamW::init::<B, Linear<B>>(0.05, 1e-8).load_record(recorder.load(bytes, &device).unwrap());
    assert_eq!(weight_moments(&resumed, weight), before);
    let uninterrupted = train(a.clone(), &mut optim, 2, 2);
    let again = train(a, &mut resumed, 2, 2);
    assert_eq!(values(&again), values(&uninterrupted));
    assert_eq!(
        weight_moments(&resumed, weight),
        weight_moments(&optim, weight)
    );
}

#[test]
fn a_bf16_run_resumes_with_the_moments_it_saved() {
    claim::<Cpu>(&Default::default(), FloatDType::BF16).expect("a fresh device");
    adamw::install::<Cpu>(host_update::update);
    resume_keeps(DType::F32);
    // burn's step (no kernel) keeps the moments in the device's type, and reads them so.
    adamw::uninstall::<Cpu>();
    resume_keeps(DType::BF16);
}
