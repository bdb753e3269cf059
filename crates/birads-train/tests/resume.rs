//! Optimiser state survives a save/load round trip: a resumed step equals the uninterrupted one.

use birads_model::{CpuTrain, MyConvNeXtConfig};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};

type B = CpuTrain;

fn step<O: Optimizer<birads_model::MyConvNeXt<B>, B>>(
    m: birads_model::MyConvNeXt<B>,
    o: &mut O,
    x: &Tensor<B, 4>,
) -> birads_model::MyConvNeXt<B> {
    let loss = m.forward(x.clone()).powi_scalar(2).mean();
    let g = GradientsParams::from_grads(loss.backward(), &m);
    o.step(1e-2, m, g)
}

#[test]
fn adamw_state_round_trips_through_the_recorder() {
    let device = Default::default();
    let cfg = MyConvNeXtConfig::new()
        .with_dims(vec![8, 8, 8, 8])
        .with_depths(vec![1, 1, 1, 1])
        .with_dropout(0.0)
        .with_sd_rate(0.0);
    let x = Tensor::<B, 4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &device);
    let mut opt = AdamWConfig::new().init::<B, birads_model::MyConvNeXt<B>>();
    let m = step(cfg.init::<B>(&device), &mut opt, &x);
    let dir = tempfile::tempdir().unwrap();
    let rec = BinFileRecorder::<FullPrecisionSettings>::new();
    rec.record(m.clone().into_record(), dir.path().join("model"))
        .unwrap();
    rec.record(opt.to_record(), dir.path().join("optim"))
        .unwrap();

    let straight = step(m, &mut opt, &x);
    let mut opt2 = AdamWConfig::new().init::<B, birads_model::MyConvNeXt<B>>();
    opt2 = opt2.load_record(rec.load(dir.path().join("optim.bin"), &device).unwrap());
    let m2 = cfg
        .init::<B>(&device)
        .load_record(rec.load(dir.path().join("model.bin"), &device).unwrap());
    let resumed = step(m2, &mut opt2, &x);
    let a: Vec<f32> = straight.head_fc2.weight.val().into_data().to_vec().unwrap();
    let b: Vec<f32> = resumed.head_fc2.weight.val().into_data().to_vec().unwrap();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-7, "resumed step differs by {diff}");
}
