//! The DICOM branch of decoding: the fuzzer's bytes follow a valid preamble and `DICM` (so that
//! every input reaches the DICOM parser). Any input gives an error or a non-empty RGB frame
//! within the pixel limit, never a panic or a runaway allocation.
#![no_main]

use birads_data::dicom::decode_dicom;
use birads_data::image_ops::MAX_PIXELS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    bytes.extend_from_slice(data);
    for frame in [None, Some(1)] {
        if let Ok(img) = decode_dicom(&bytes, frame) {
            let (w, h) = img.dimensions();
            assert!(w > 0 && h > 0);
            assert!(w as u64 * h as u64 <= MAX_PIXELS);
            assert_eq!(img.as_raw().len(), w as usize * h as usize * 3);
        }
    }
});
