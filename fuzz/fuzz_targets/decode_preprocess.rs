//! Decode + the original inference chain (CutBlack → CenterCrop 672 → Resize 224 → Normalize):
//! any bytes give an error or a finite 3×224×224 tensor, never a panic or a runaway allocation.
#![no_main]

use birads_data::image_ops::decode_bytes;
use birads_data::pipeline::{preprocess, Preprocess};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_bytes(data) {
        let p = Preprocess::original_inference();
        let out = preprocess(&img, None, &p);
        assert_eq!(
            (out.tensor.channels, out.tensor.height, out.tensor.width),
            (3, 224, 224)
        );
        assert!(out.tensor.data.iter().all(|v| v.is_finite()));
        let b = out.cut_box;
        assert!(b.x1 <= img.width() && b.y1 <= img.height() && b.x0 < b.x1 && b.y0 < b.y1);
    }
});
