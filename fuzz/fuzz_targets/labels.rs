//! YOLO label files: any bytes give a label or an error, never a panic; an accepted label is
//! in range and its box inside [0,1].
#![no_main]

use birads_data::labels::{interpret, ClassIds};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (ids, n) in [(ClassIds::OneBased(6), 6), (ClassIds::Binary, 2)] {
        if let Ok(label) = interpret(&text, ids) {
            assert!(label.value < n, "value {} out of range", label.value);
            if let Some(b) = label.bbox {
                for v in [b.cx, b.cy, b.w, b.h] {
                    assert!((0.0..=1.0).contains(&v), "box {b:?} outside [0,1]");
                }
            }
        }
    }
});
