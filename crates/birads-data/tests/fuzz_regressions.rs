//! The inputs the fuzzers once failed on (`fuzz/regressions/<target>/`), replayed: each must
//! now be a clear error, refused before the DICOM parser reserves what it declares.

use std::path::Path;

use birads_data::dicom::{decode_dicom, DicomError};

#[test]
fn dicom_regressions_are_refused_before_parsing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/dicom");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        // As the fuzz target feeds them: after a preamble and the DICM marker.
        let mut bytes = vec![0u8; 128];
        bytes.extend_from_slice(b"DICM");
        bytes.extend_from_slice(&std::fs::read(&path).unwrap());
        let e = decode_dicom(&bytes, None).unwrap_err();
        assert!(
            matches!(&e, DicomError::Parse(m) if m.contains("declares")),
            "{}: {e}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 2, "{n} regression inputs in {}", dir.display());
}
