//! Helpers shared by the integration tests that read `scripts/make_model_fixtures.py`'s files.
#![allow(dead_code)]

use std::path::Path;

use birads_model::{MyConvNeXtConfig, MyDenseNetConfig};

pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

pub fn convnext_config(c: &serde_json::Value) -> MyConvNeXtConfig {
    MyConvNeXtConfig::new()
        .with_dims(usizes(&c["dims"]))
        .with_depths(usizes(&c["depths"]))
}

pub fn densenet_config(c: &serde_json::Value) -> MyDenseNetConfig {
    MyDenseNetConfig::new()
        .with_growth(c["growth"].as_u64().unwrap() as usize)
        .with_blocks(usizes(&c["blocks"]))
        .with_init_features(c["init"].as_u64().unwrap() as usize)
        .with_bn_size(c["bn_size"].as_u64().unwrap() as usize)
}

pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}
