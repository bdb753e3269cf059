//! DICOM input (dicom-rs): single- and multi-frame ultrasound objects to 8-bit RGB.
//!
//! One frame is used — the middle one unless asked otherwise (a cine loop's middle frame is
//! the usual still). MONOCHROME1/2 (VOI/modality LUTs applied, 16-bit narrowed to 8),
//! RGB (interleaved or planar), YBR_FULL and YBR_FULL_422; every transfer syntax dicom-rs
//! decodes in pure Rust (native, deflate, RLE, JPEG baseline/extended/lossless). Anything else
//! is a clear error naming what was found.

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_pixeldata::{
    ConvertOptions, PhotometricInterpretation, PixelDecoder, PlanarConfiguration,
};
use image::RgbImage;

/// The largest frame accepted (the same limit as other images).
use crate::image_ops::MAX_PIXELS;

#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("not a readable DICOM file: {0}")]
    Parse(String),
    #[error("DICOM object without usable image attributes: {0}")]
    Attributes(String),
    #[error(
        "DICOM frame is {width}×{height}×{frames} pixels, above the limit of {MAX_PIXELS} pixels"
    )]
    TooLarge {
        width: u32,
        height: u32,
        frames: u32,
    },
    #[error("DICOM frame is {width}×{height} pixels: an empty frame (Rows or Columns is 0)")]
    Empty { width: u32, height: u32 },
    #[error("cannot decode the DICOM pixel data (transfer syntax {syntax}): {reason}")]
    PixelData { syntax: String, reason: String },
    #[error("DICOM frame {frame} requested, the object has {frames}")]
    NoSuchFrame { frame: u32, frames: u32 },
    #[error("DICOM photometric interpretation {0} with {1} samples per pixel is not supported")]
    Photometric(String, u16),
}

/// True for a DICOM Part 10 file: 128-byte preamble, then `DICM`.
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

/// Decode one frame (default: the middle one) of a DICOM Part 10 file to RGB.
pub fn decode_dicom(bytes: &[u8], frame: Option<u32>) -> Result<RgbImage, DicomError> {
    if !is_dicom(bytes) {
        return Err(DicomError::Parse(
            "no DICM marker after the 128-byte preamble".into(),
        ));
    }
    check_declared_lengths(&bytes[128..])?;
    let obj = dicom_object::OpenFileOptions::new()
        .from_reader(&bytes[128..])
        .map_err(|e| DicomError::Parse(e.to_string()))?;
    let [rows, cols, frames] = geometry(&obj)?;
    let frame = frame.unwrap_or(frames / 2);
    if frame >= frames {
        return Err(DicomError::NoSuchFrame { frame, frames });
    }
    let uid = obj.meta().transfer_syntax().trim_end_matches('\0');
    let syntax = match syntax_name(uid) {
        Some(name) => format!("{uid}, {name}"),
        None => uid.to_string(),
    };
    check_pixel_data(&obj, [rows, cols, frames], uid)?;
    let pixel_err = |e: &dyn std::fmt::Display| DicomError::PixelData {
        syntax: syntax.clone(),
        reason: e.to_string(),
    };
    let decoded = obj.decode_pixel_data().map_err(|e| pixel_err(&e))?;
    let data: Vec<u8> = if decoded.samples_per_pixel() == 3 && decoded.bits_allocated() == 8 {
        // Colour samples carry no LUTs; taken as stored (dicom-pixeldata's converter refuses
        // planar configuration 1).
        decoded
            .frame_data(frame)
            .map_err(|e| pixel_err(&e))?
            .to_vec()
    } else {
        // Modality and VOI LUTs as the object defines them, 8 bits out.
        decoded
            .to_vec_frame_with_options(frame, &ConvertOptions::new().force_8bit())
            .map_err(|e| pixel_err(&e))?
    };
    let (w, h) = (decoded.columns(), decoded.rows());
    let rgb = to_rgb(
        &data,
        decoded.samples_per_pixel(),
        decoded.photometric_interpretation(),
        decoded.planar_configuration() == PlanarConfiguration::PixelFirst,
        [w as usize, h as usize],
    )?;
    RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| DicomError::Attributes("pixel count mismatch".into()))
}

/// `[Rows, Columns, Number of Frames]`, refused when empty or, before any pixel is decoded
/// (the whole object is decoded at once), above the pixel limit.
fn geometry(obj: &dicom_object::DefaultDicomObject) -> Result<[u32; 3], DicomError> {
    let int = |tag, name: &str| -> Result<u32, DicomError> {
        obj.element(tag)
            .map_err(|_| DicomError::Attributes(format!("{name} is missing")))?
            .to_int::<u32>()
            .map_err(|e| DicomError::Attributes(format!("{name}: {e}")))
    };
    let (rows, cols) = (int(tags::ROWS, "Rows")?, int(tags::COLUMNS, "Columns")?);
    let frames = obj
        .element(tags::NUMBER_OF_FRAMES)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    if rows == 0 || cols == 0 {
        return Err(DicomError::Empty {
            width: cols,
            height: rows,
        });
    }
    if rows as u64 * cols as u64 * frames as u64 > MAX_PIXELS {
        return Err(DicomError::TooLarge {
            width: cols,
            height: rows,
            frames,
        });
    }
    Ok([rows, cols, frames])
}

/// One frame's 8-bit samples (`planar`: RRR…GGG…BBB…) to interleaved RGB.
fn to_rgb(
    data: &[u8],
    spp: u16,
    pi: &PhotometricInterpretation,
    planar: bool,
    [w, h]: [usize; 2],
) -> Result<Vec<u8>, DicomError> {
    let n = w * h;
    Ok(match (spp, pi) {
        (1, PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2) => {
            let grey = data.get(..n).ok_or_else(|| short(data, n))?;
            // MONOCHROME1: the minimum is white.
            let inv = matches!(pi, PhotometricInterpretation::Monochrome1);
            grey.iter()
                .map(|&g| if inv { 255 - g } else { g })
                .flat_map(|g| [g, g, g])
                .collect()
        }
        (3, PhotometricInterpretation::Rgb) => interleaved(data, n, planar)?,
        (3, PhotometricInterpretation::YbrFull | PhotometricInterpretation::YbrFull422) => {
            if data.len() >= 3 * n {
                ybr_to_rgb(&interleaved(data, n, planar)?)
            } else if matches!(pi, PhotometricInterpretation::YbrFull422) && data.len() >= 2 * n {
                // Native 4:2:2: Y₀ Y₁ Cb Cr for each horizontal pair.
                ybr_to_rgb(&upsample_422(data, w, h))
            } else {
                return Err(short(data, 3 * n));
            }
        }
        _ => return Err(DicomError::Photometric(pi.to_string(), spp)),
    })
}

/// Every length the object declares (element values, sequences, items, pixel fragments) fits
/// in what is left of the file. dicom-rs reserves (and zero-fills) a value's declared length
/// before reading it, so without this a crafted object of a few hundred bytes costs gigabytes
/// of memory (found by fuzzing: fuzz/README.md). `body` starts at `DICM`.
///
/// A walk over the element headers only, reading them as dicom-rs does (written here because
/// the parser's own lazy reader reads some values, the pixel data's offset table, eagerly): the
/// file meta group in explicit VR little endian, then the data set in its transfer syntax,
/// unknown VRs as UN, implicit VRs from the standard dictionary. Sequences and items are
/// entered (their contents are headers too); other values are skipped. A numeric value whose
/// length is not a whole number of numbers is refused too: dicom-rs would read its remainder
/// as the next header, out of step with this walk. A deflated data set is inflated first (at
/// most a frame at the pixel limit: a deflate bomb is refused too) and walked inflated.
fn check_declared_lengths(body: &[u8]) -> Result<(), DicomError> {
    let Some((start, syntax)) = walk_meta(body)? else {
        // No readable meta group: the parser says what is wrong.
        return Ok(());
    };
    let (explicit, big) = match syntax.trim_end_matches(|c: char| c.is_whitespace() || c == '\0') {
        "1.2.840.10008.1.2" => (false, false),
        "1.2.840.10008.1.2.2" => (true, true),
        "1.2.840.10008.1.2.1.99" => {
            // Deflated: the lengths refer to the inflated data set, inflated here with a cap.
            let inflated = inflate_capped(&body[start..])?;
            return walk_data_set(
                &Bytes {
                    b: &inflated,
                    big: false,
                },
                0,
                true,
            );
        }
        _ => (true, false),
    };
    walk_data_set(&Bytes { b: body, big }, start, explicit)
}

/// The largest inflated data set accepted: a frame at the pixel limit in RGB, plus headroom.
const MAX_INFLATED: u64 = MAX_PIXELS * 3 + (1 << 20);

fn inflate_capped(deflated: &[u8]) -> Result<Vec<u8>, DicomError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| DicomError::Parse(format!("deflated data set: {e}")))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(DicomError::Parse(format!(
            "the deflated data set inflates to more than {MAX_INFLATED} bytes"
        )));
    }
    Ok(out)
}

const UNDEFINED: u32 = u32::MAX;

/// Numbers at positions of a buffer, in one byte order.
struct Bytes<'a> {
    b: &'a [u8],
    big: bool,
}

impl Bytes<'_> {
    fn u16(&self, at: usize) -> u16 {
        let v = [self.b[at], self.b[at + 1]];
        if self.big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    }
    fn u32(&self, at: usize) -> u32 {
        let v = [self.b[at], self.b[at + 1], self.b[at + 2], self.b[at + 3]];
        if self.big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }
    /// An explicit-VR header at `at`: (VR, length, header bytes); `None` past the end.
    fn explicit_header(&self, at: usize) -> Option<(VR, u32, usize)> {
        // An unknown VR is read as UN, as dicom-rs does.
        let vr = VR::from_binary([self.b[at + 4], self.b[at + 5]]).unwrap_or(VR::UN);
        if short_length(vr) {
            Some((vr, self.u16(at + 6) as u32, 8))
        } else if at + 12 <= self.b.len() {
            Some((vr, self.u32(at + 8), 12))
        } else {
            None
        }
    }
}

/// The file meta group as dicom-rs reads it: explicit VR little endian, the group length
/// first, then elements (each its declared bytes) until that length is used up. Returns where
/// the data set starts and the transfer syntax UID; `None` where dicom-rs will refuse the group.
fn walk_meta(body: &[u8]) -> Result<Option<(usize, String)>, DicomError> {
    let m = Bytes {
        b: body,
        big: false,
    };
    if body.len() < 16 || (m.u16(4), m.u16(6)) != (0x0002, 0x0000) {
        return Ok(None);
    }
    let (group_length, mut pos, mut used) = (m.u32(12) as usize, 16, 0);
    let mut syntax = String::new();
    while used < group_length {
        if pos + 8 > body.len() {
            return Ok(None);
        }
        let tag = (m.u16(pos), m.u16(pos + 2));
        let (len, header) = if tag.0 == 0xFFFE {
            (m.u32(pos + 4), 8)
        } else {
            match m.explicit_header(pos) {
                Some((_, len, header)) => (len, header),
                None => return Ok(None),
            }
        };
        if len == UNDEFINED {
            return Ok(None);
        }
        check_fits(len, body.len() - (pos + header))?;
        if tag == (0x0002, 0x0010) {
            let v = &body[pos + header..pos + header + len as usize];
            syntax = String::from_utf8_lossy(v).into_owned();
        }
        pos += header + len as usize;
        used += header + len as usize;
    }
    Ok(Some((pos, syntax)))
}

/// The data set's headers from `pos` on: sequences and items entered (their contents are
/// headers too), pixel fragments and other values skipped, every declared length checked.
fn walk_data_set(d: &Bytes, mut pos: usize, explicit: bool) -> Result<(), DicomError> {
    let end = d.b.len();
    let mut in_fragments = false;
    while pos + 8 <= end {
        let (group, element) = (d.u16(pos), d.u16(pos + 2));
        if group == 0xFFFE {
            // Items and delimiters: no VR, a 4-byte length (a delimiter's should be 0; the
            // parser reads whatever it declares).
            let len = d.u32(pos + 4);
            pos += 8;
            if element == 0xE0DD {
                in_fragments = false;
            }
            if len != UNDEFINED {
                check_fits(len, end - pos)?;
                // A pixel fragment is data: skipped. An item holds a nested data set, and
                // whatever follows a malformed delimiter is walked as headers, to be safe.
                if in_fragments && element == 0xE000 {
                    pos += len as usize;
                }
            }
            continue;
        }
        let tag = dicom_core::Tag(group, element);
        let (vr, len, header) = if explicit {
            match d.explicit_header(pos) {
                Some(h) => h,
                None => break,
            }
        } else {
            (implicit_vr(tag), d.u32(pos + 4), 8)
        };
        pos += header;
        if len == UNDEFINED {
            // A sequence or encapsulated pixel data: items follow.
            in_fragments = (group, element) == (0x7FE0, 0x0010);
            continue;
        }
        check_fits(len, end - pos)?;
        // dicom-rs reads whole numbers only: a remainder would be read as the next header.
        let size = numeric_size(vr);
        if len % size != 0 {
            return Err(DicomError::Parse(format!(
                "{tag} ({vr:?}) declares {len} bytes, not a multiple of {size}"
            )));
        }
        // A sequence's contents are headers (items): walked, not skipped.
        if vr != VR::SQ {
            pos += len as usize;
        }
    }
    Ok(())
}

/// The VRs with a 2-byte length in explicit VR (PS3.5 7.1.2); all others have 2 reserved bytes
/// and a 4-byte length.
fn short_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        AE | AS
            | AT
            | CS
            | DA
            | DS
            | DT
            | FL
            | FD
            | IS
            | LO
            | LT
            | PN
            | SH
            | SL
            | SS
            | ST
            | TM
            | UI
            | UL
            | US
    )
}

/// Bytes per number of the numeric VRs (1 for the others).
fn numeric_size(vr: VR) -> u32 {
    use VR::*;
    match vr {
        US | OW | SS => 2,
        AT | FL | OF | SL | OL | UL => 4,
        FD | OD | SV | OV | UV => 8,
        _ => 1,
    }
}

/// The VR dicom-rs gives an element in implicit VR: pixel and overlay data OW, else the
/// standard dictionary's, else UN.
fn implicit_vr(tag: dicom_core::Tag) -> VR {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    if tag == dicom_core::Tag(0x7FE0, 0x0010) || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
        return VR::OW;
    }
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.vr().relaxed())
        .unwrap_or(VR::UN)
}

fn check_fits(len: u32, left: usize) -> Result<(), DicomError> {
    if len as usize > left {
        return Err(DicomError::Parse(format!(
            "a value declares {len} bytes, {left} are left in the file"
        )));
    }
    Ok(())
}

/// Names of the transfer syntaxes met in ultrasound archives that need saying in an error.
fn syntax_name(uid: &str) -> Option<&'static str> {
    Some(match uid {
        "1.2.840.10008.1.2" => "implicit VR little endian",
        "1.2.840.10008.1.2.1" => "explicit VR little endian",
        "1.2.840.10008.1.2.2" => "explicit VR big endian",
        "1.2.840.10008.1.2.4.50" => "JPEG baseline",
        "1.2.840.10008.1.2.4.70" => "JPEG lossless",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "JPEG-LS (not supported)",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "JPEG 2000 (not supported)",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "HTJ2K (not supported)"
        }
        "1.2.840.10008.1.2.5" => "RLE lossless",
        _ => return None,
    })
}

/// The Pixel Data element exists and, for uncompressed syntaxes, holds at least
/// Rows × Columns × Samples × Bits Allocated / 8 bytes per frame.
fn check_pixel_data(
    obj: &dicom_object::DefaultDicomObject,
    [rows, cols, frames]: [u32; 3],
    uid: &str,
) -> Result<(), DicomError> {
    let el = obj.element(tags::PIXEL_DATA).map_err(|_| {
        DicomError::Attributes(
            "no Pixel Data element (7FE0,0010): the object holds no image".into(),
        )
    })?;
    let native = matches!(
        uid,
        "1.2.840.10008.1.2"
            | "1.2.840.10008.1.2.1"
            | "1.2.840.10008.1.2.2"
            | "1.2.840.10008.1.2.1.99"
    );
    let Some(value) = el.value().primitive().filter(|_| native) else {
        return Ok(());
    };
    let attr = |tag, default: u32| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(default)
    };
    let (spp, bits) = (
        attr(tags::SAMPLES_PER_PIXEL, 1),
        attr(tags::BITS_ALLOCATED, 8),
    );
    let want = rows as u64 * cols as u64 * spp as u64 * bits.div_ceil(8) as u64 * frames as u64;
    let have = value.to_bytes().len() as u64;
    if have < want {
        return Err(DicomError::Attributes(format!(
            "{have} bytes of pixel data, {want} expected ({rows} rows × {cols} columns × {spp} samples × {bits} bits × {frames} frames)"
        )));
    }
    Ok(())
}

fn short(data: &[u8], want: usize) -> DicomError {
    DicomError::Attributes(format!(
        "frame has {} bytes of pixel data, {want} expected",
        data.len()
    ))
}

/// Samples of a 3-sample frame in pixel order; `planar` = first, all R (or Y), then G, then B.
fn interleaved(data: &[u8], n: usize, planar: bool) -> Result<Vec<u8>, DicomError> {
    let d = data.get(..3 * n).ok_or_else(|| short(data, 3 * n))?;
    Ok(if planar {
        (0..n)
            .flat_map(|i| [d[i], d[n + i], d[2 * n + i]])
            .collect()
    } else {
        d.to_vec()
    })
}

/// 4:2:2 pairs to one Y Cb Cr triple per pixel.
fn upsample_422(data: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let row = &data[y * w * 2..];
        for x in 0..w {
            let pair = (x / 2) * 4;
            let luma = row[pair + (x % 2)];
            out.extend_from_slice(&[luma, row[pair + 2], row[pair + 3]]);
        }
    }
    out
}

/// YBR_FULL to RGB (DICOM PS3.3 C.7.6.3.1.2, the JPEG/JFIF full-range equations).
fn ybr_to_rgb(ybr: &[u8]) -> Vec<u8> {
    ybr.chunks_exact(3)
        .flat_map(|p| {
            let (y, cb, cr) = (p[0] as f32, p[1] as f32 - 128.0, p[2] as f32 - 128.0);
            let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
            [
                c(y + 1.402 * cr),
                c(y - 0.344_136 * cb - 0.714_136 * cr),
                c(y + 1.772 * cb),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::value::Value;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    const US_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.6.1";
    const US_MULTIFRAME: &str = "1.2.840.10008.5.1.4.1.1.3.1";
    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
    const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
    const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

    /// A DICOM Part 10 file in memory.
    #[allow(clippy::too_many_arguments)]
    fn dicom(
        w: u16,
        h: u16,
        frames: u32,
        spp: u16,
        pi: &str,
        bits: u16,
        pixels: Value<InMemDicomObject>,
        syntax: &str,
        planar: u16,
    ) -> Vec<u8> {
        let mut o = InMemDicomObject::new_empty();
        let sop = if frames > 1 { US_MULTIFRAME } else { US_IMAGE };
        o.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop),
        ));
        o.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4.5"),
        ));
        o.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(h),
        ));
        o.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(w),
        ));
        o.put(DataElement::new(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(spp),
        ));
        o.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(pi),
        ));
        o.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(bits),
        ));
        o.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(bits),
        ));
        o.put(DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            PrimitiveValue::from(bits - 1),
        ));
        o.put(DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
        if spp == 3 {
            o.put(DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(planar),
            ));
        }
        if frames > 1 {
            o.put(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                PrimitiveValue::from(frames.to_string()),
            ));
        }
        let vr = if bits > 8 { VR::OW } else { VR::OB };
        o.put(DataElement::new(tags::PIXEL_DATA, vr, pixels));
        let file = o
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(syntax)
                    .media_storage_sop_class_uid(sop)
                    .media_storage_sop_instance_uid("1.2.3.4.5"),
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.dcm");
        file.write_to_file(&p).unwrap();
        std::fs::read(&p).unwrap()
    }

    fn native(bytes: Vec<u8>) -> Value<InMemDicomObject> {
        Value::Primitive(PrimitiveValue::U8(bytes.into()))
    }

    #[test]
    fn monochrome2_single_frame() {
        let px: Vec<u8> = (0..12 * 10).map(|i| (i * 2) as u8).collect();
        let f = dicom(
            12,
            10,
            1,
            1,
            "MONOCHROME2",
            8,
            native(px.clone()),
            EXPLICIT_LE,
            0,
        );
        assert!(is_dicom(&f));
        let img = decode_dicom(&f, None).unwrap();
        assert_eq!(img.dimensions(), (12, 10));
        for (i, p) in img.pixels().enumerate() {
            assert_eq!(p.0, [px[i]; 3]);
        }
    }

    #[test]
    fn monochrome1_is_inverted() {
        let px: Vec<u8> = (0..8 * 8).map(|i| (i * 3) as u8).collect();
        let f = dicom(
            8,
            8,
            1,
            1,
            "MONOCHROME1",
            8,
            native(px.clone()),
            EXPLICIT_LE,
            0,
        );
        let img = decode_dicom(&f, None).unwrap();
        let first = img.get_pixel(0, 0).0[0] as i32;
        let last = img.get_pixel(7, 7).0[0] as i32;
        assert!(
            first > last,
            "dark stored value shows bright: {first} vs {last}"
        );
    }

    #[test]
    fn multi_frame_middle_by_default_and_any_on_request() {
        // Three 6×4 RGB frames filled with 10, 20, 30.
        let mut px = Vec::new();
        for v in [10u8, 20, 30] {
            px.extend(std::iter::repeat_n(v, 6 * 4 * 3));
        }
        let f = dicom(6, 4, 3, 3, "RGB", 8, native(px), EXPLICIT_LE, 0);
        assert_eq!(decode_dicom(&f, None).unwrap().get_pixel(0, 0).0, [20; 3]);
        assert_eq!(
            decode_dicom(&f, Some(0)).unwrap().get_pixel(3, 2).0,
            [10; 3]
        );
        assert_eq!(
            decode_dicom(&f, Some(2)).unwrap().get_pixel(5, 3).0,
            [30; 3]
        );
        assert!(matches!(
            decode_dicom(&f, Some(3)),
            Err(DicomError::NoSuchFrame {
                frame: 3,
                frames: 3
            })
        ));
    }

    #[test]
    fn rgb_planar_and_ybr_full() {
        // 2×1: planar RGB R plane [200, 0], G [0, 100], B [50, 60].
        let f = dicom(
            2,
            1,
            1,
            3,
            "RGB",
            8,
            native(vec![200, 0, 0, 100, 50, 60]),
            EXPLICIT_LE,
            1,
        );
        let img = decode_dicom(&f, None).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [200, 0, 50]);
        assert_eq!(img.get_pixel(1, 0).0, [0, 100, 60]);
        // YBR_FULL grey (Cb = Cr = 128) stays grey; a red-ish value converts as JPEG does.
        let f = dicom(
            2,
            1,
            1,
            3,
            "YBR_FULL",
            8,
            native(vec![90, 128, 128, 76, 85, 255]),
            EXPLICIT_LE,
            0,
        );
        let img = decode_dicom(&f, None).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [90, 90, 90]);
        let red = img.get_pixel(1, 0).0;
        assert!(red[0] > 240 && red[1] < 10 && red[2] < 10, "{red:?}");
    }

    #[test]
    fn jpeg_baseline_compressed_frame() {
        let src = image::RgbImage::from_fn(32, 24, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 9) as u8, 90])
        });
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 95)
            .encode_image(&src)
            .unwrap();
        let seq = PixelFragmentSequence::new(Vec::<u32>::new(), vec![jpg]);
        let f = dicom(
            32,
            24,
            1,
            3,
            "YBR_FULL_422",
            8,
            Value::PixelSequence(seq),
            JPEG_BASELINE,
            0,
        );
        let img = decode_dicom(&f, None).unwrap();
        assert_eq!(img.dimensions(), (32, 24));
        let err: i32 = img
            .pixels()
            .zip(src.pixels())
            .map(|(a, b)| {
                (0..3)
                    .map(|k| (a.0[k] as i32 - b.0[k] as i32).abs())
                    .max()
                    .unwrap()
            })
            .max()
            .unwrap();
        assert!(err <= 12, "JPEG round trip off by {err}");
    }

    #[test]
    fn declared_lengths_beyond_the_file_are_refused_before_allocating() {
        // A JPEG fragment whose item claims ~4 GB (the fuzzer's out-of-memory input, rebuilt).
        let seq = PixelFragmentSequence::new(Vec::<u32>::new(), vec![vec![0xff, 0xd8, 0xff, 0xd9]]);
        let mut f = dicom(
            8,
            8,
            1,
            3,
            "YBR_FULL_422",
            8,
            Value::PixelSequence(seq),
            JPEG_BASELINE,
            0,
        );
        let item = f
            .windows(4)
            .rposition(|w| w == [0xfe, 0xff, 0x00, 0xe0])
            .unwrap();
        f[item + 4..item + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let e = decode_dicom(&f, None).unwrap_err().to_string();
        assert!(e.contains("declares 4294967280 bytes"), "{e}");
        // The same for a native value: Pixel Data (OB, 4-byte length after 2 reserved bytes).
        let mut g = dicom(
            4,
            4,
            1,
            1,
            "MONOCHROME2",
            8,
            native(vec![7; 16]),
            EXPLICIT_LE,
            0,
        );
        let px = g
            .windows(4)
            .rposition(|w| w == [0xe0, 0x7f, 0x10, 0x00])
            .unwrap();
        g[px + 8..px + 12].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        let e = decode_dicom(&g, None).unwrap_err().to_string();
        assert!(e.contains("declares 2147483648 bytes"), "{e}");
    }

    #[test]
    fn a_deflated_data_set_decodes_and_a_deflate_bomb_is_refused() {
        let px: Vec<u8> = (0..16 * 8).map(|i| (i * 2) as u8).collect();
        let f = dicom(
            16,
            8,
            1,
            1,
            "MONOCHROME2",
            8,
            native(px.clone()),
            DEFLATED,
            0,
        );
        let img = decode_dicom(&f, None).unwrap();
        assert_eq!(img.get_pixel(5, 0).0, [px[5]; 3]);
        // A few kilobytes that inflate past the cap.
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_INFLATED >> 20) + 2 {
            std::io::Write::write_all(&mut enc, &zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        let meta_end = f.len() - deflated_len(&f);
        let mut g = f[..meta_end].to_vec();
        g.extend_from_slice(&bomb);
        let e = decode_dicom(&g, None).unwrap_err().to_string();
        assert!(e.contains("inflates to more than"), "{e}");
    }

    /// Bytes of the deflated data set at the end of `f` (what follows the meta group).
    fn deflated_len(f: &[u8]) -> usize {
        let gl = u32::from_le_bytes(f[140..144].try_into().unwrap()) as usize;
        f.len() - (144 + gl)
    }

    #[test]
    fn bad_dicom_is_a_clear_error() {
        let mut f = dicom(
            4,
            4,
            1,
            1,
            "MONOCHROME2",
            8,
            native(vec![0; 16]),
            EXPLICIT_LE,
            0,
        );
        assert!(matches!(
            decode_dicom(&f[..140], None),
            Err(DicomError::Parse(_))
        ));
        // Unsupported photometric interpretation.
        let p = dicom(
            4,
            4,
            1,
            1,
            "PALETTE COLOR",
            8,
            native(vec![0; 16]),
            EXPLICIT_LE,
            0,
        );
        let e = decode_dicom(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("PALETTE COLOR") || e.contains("photometric") || e.contains("pixel data"),
            "{e}"
        );
        // Claimed size far above the limit: refused before decoding.
        let big = dicom(
            60000,
            60000,
            1,
            1,
            "MONOCHROME2",
            8,
            native(vec![0; 16]),
            EXPLICIT_LE,
            0,
        );
        assert!(matches!(
            decode_dicom(&big, None),
            Err(DicomError::TooLarge { .. })
        ));
        // Rows = 0: an empty frame, said as such (not "above the limit").
        let empty = dicom(
            64,
            0,
            1,
            1,
            "MONOCHROME2",
            8,
            native(vec![0; 16]),
            EXPLICIT_LE,
            0,
        );
        let e = decode_dicom(&empty, None).unwrap_err();
        assert!(
            matches!(
                e,
                DicomError::Empty {
                    width: 64,
                    height: 0
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("empty frame"), "{e}");
        f.truncate(200);
        assert!(decode_dicom(&f, None).is_err());
    }
}
