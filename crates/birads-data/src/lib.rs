//! birads-data: files → samples → float tensors.
//!
//! Dataset readers for every layout users have ([`readers`], [`manifest`]), label parsing
//! with item-by-item problem reports ([`labels`]), the image operations of the original
//! program reproduced exactly ([`image_ops`]), training augmentation ([`augment`]),
//! oversampling and group-aware splits ([`sampler`], [`split`]), the preprocessing chains
//! ([`pipeline`]) and a parallel batch loader ([`loader`]), plus a synthetic ultrasound
//! generator ([`synth`]). No deep-learning framework here: plain image buffers and `f32`s.

pub mod atomic;
pub mod augment;
pub mod augment_more;
pub mod check;
pub mod dicom;
pub mod draw;
pub mod folds;
pub mod image_ops;
pub mod labels;
pub mod loader;
pub mod manifest;
pub mod pipeline;
pub mod readers;
pub mod rng;
pub mod sample;
pub mod sampler;
pub mod split;
pub mod synth;

pub use readers::{read_dataset, ReadError};
pub use sample::{
    ClassList, Dataset, ImageSource, LesionBox, Problem, Sample, Severity, BIRADS6, FEATURE_NAMES,
};
