//! Fresh models are drawn as the original's PyTorch classes draw them: torchvision's DenseNet
//! and ConvNeXt re-initialise their own layers (`kaiming_normal_` for DenseNet's convolutions;
//! `trunc_normal_(std=0.02)` and zero biases for ConvNeXt's convolutions and linears), while
//! the layers the original adds (CBAM, the new heads) keep PyTorch's default U(±1/√fan_in).
//! Training from scratch depends on this; a checkpoint load overwrites it.

use birads_model::{Cpu, MyConvNeXtConfig, MyDenseNetConfig};
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::prelude::*;

type B = Cpu;

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec().expect("f32")
}

fn std(v: &[f32]) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Normal(0, want): sample sd within 10 % and tails beyond the uniform default's reach.
fn assert_normal(what: &str, v: &[f32], want: f64) {
    let s = std(v);
    assert!(
        (s / want - 1.0).abs() < 0.1,
        "{what}: sd {s:.5}, expected {want:.5} ({} values)",
        v.len()
    );
}

/// PyTorch's default U(±1/√fan_in): inside the bound, sd bound/√3 within 10 %.
fn assert_default_uniform(what: &str, v: &[f32], fan_in: usize) {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let max = v.iter().fold(0f32, |m, &x| m.max(x.abs())) as f64;
    assert!(
        max <= bound * (1.0 + 1e-6),
        "{what}: |w| up to {max}, bound {bound}"
    );
    let s = std(v);
    let want = bound / 3f64.sqrt();
    assert!(
        (s / want - 1.0).abs() < 0.1,
        "{what}: sd {s:.5}, expected {want:.5}"
    );
}

fn conv_fan_in(c: &Conv2d<B>) -> usize {
    let [_, cin, kh, kw] = c.weight.dims();
    cin * kh * kw
}

fn assert_default_linear(what: &str, l: &Linear<B>) {
    let fan_in = l.weight.dims()[0];
    assert_default_uniform(what, &values(l.weight.val()), fan_in);
    let b = values(l.bias.as_ref().expect("bias").val());
    assert!(
        b.iter().any(|&x| x != 0.0),
        "{what}: default biases are not zero"
    );
}

#[test]
fn densenet_convolutions_are_kaiming_normal_and_the_added_layers_default() {
    let m = MyDenseNetConfig::new().init::<B>(&Default::default());
    let mut convs: Vec<(String, &Conv2d<B>)> = vec![("conv0".into(), &m.conv0)];
    for (i, block) in m.blocks.iter().enumerate() {
        for (j, l) in block.layers.iter().enumerate() {
            convs.push((format!("block {i} layer {j} conv1"), &l.conv1));
            convs.push((format!("block {i} layer {j} conv2"), &l.conv2));
        }
    }
    for (i, t) in m.transitions.iter().enumerate() {
        convs.push((format!("transition {i}"), &t.conv));
    }
    let mut checked = 0;
    for (name, c) in convs {
        let v = values(c.weight.val());
        if v.len() < 2000 {
            continue; // too few draws to test a standard deviation
        }
        assert_normal(&name, &v, (2.0 / conv_fan_in(c) as f64).sqrt());
        checked += 1;
    }
    assert!(checked > 40, "only {checked} convolutions checked");
    // CBAM (added after torchvision's constructor) and the head keep PyTorch's default.
    let cbam = &m.blocks[3].cbam;
    let fc1 = &cbam.channel_attention.fc1;
    assert_default_uniform("cbam fc1", &values(fc1.weight.val()), conv_fan_in(fc1));
    assert_default_linear("head fc1", &m.head_fc1);
    assert_default_linear("head fc2", &m.head_fc2);
    assert_default_linear("task head fc1", &m.task_heads[0].fc1);
}

#[test]
fn convnext_layers_are_normal_002_with_zero_biases_and_the_head_defaults() {
    let m = MyConvNeXtConfig::new().init::<B>(&Default::default());
    let mut checked = 0;
    for (s, stage) in m.stages.iter().enumerate() {
        for (k, b) in stage.blocks.iter().enumerate() {
            for (what, w, bias) in [
                ("dwconv", values(b.dwconv.weight.val()), &b.dwconv.bias),
                ("pwconv1", values(b.pwconv1.weight.val()), &b.pwconv1.bias),
                ("pwconv2", values(b.pwconv2.weight.val()), &b.pwconv2.bias),
            ] {
                let name = format!("stage {s} block {k} {what}");
                assert_normal(&name, &w, 0.02);
                let bias = values(bias.as_ref().expect("bias").val());
                assert!(bias.iter().all(|&x| x == 0.0), "{name}: bias not zero");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 18);
    for (name, c) in [
        ("stem", &m.stem_conv),
        ("downsample 0", &m.downsamples[0].conv),
    ] {
        assert_normal(name, &values(c.weight.val()), 0.02);
        let bias = values(c.bias.as_ref().expect("bias").val());
        assert!(bias.iter().all(|&x| x == 0.0), "{name}: bias not zero");
    }
    assert_default_linear("head fc1", &m.head_fc1);
    assert_default_linear("head fc2", &m.head_fc2);
}
