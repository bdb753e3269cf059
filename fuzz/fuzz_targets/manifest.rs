//! CSV manifests: any bytes give a dataset (with per-row problems) or one error, never a
//! panic; every accepted sample's class indexes the dataset's class list.
#![no_main]

use birads_data::manifest::parse_manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("/nonexistent-birads-fuzz/manifest.csv");
    if let Ok(ds) = parse_manifest(data, path) {
        for s in &ds.samples {
            if let Some(c) = s.class {
                assert!(c < ds.classes.len(), "class {c} of {}", ds.classes.len());
            }
            if let Some(b) = s.lesion {
                assert!(b.cx.is_finite() && b.cy.is_finite() && b.w.is_finite() && b.h.is_finite());
            }
        }
    }
});
