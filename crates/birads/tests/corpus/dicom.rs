//! DICOM files for the tests, written with dicom-rs: a valid RGB ultrasound object and the
//! malformed ones the bad-input corpus holds.

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use image::RgbImage;

pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const JPEG_2000: &str = "1.2.840.10008.1.2.4.90";
const US_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.6.1";

/// What goes into one object.
pub struct Spec {
    pub rows: u16,
    pub cols: u16,
    pub frames: u32,
    pub samples_per_pixel: u16,
    pub photometric: &'static str,
    pub bits: u16,
    /// Native pixel bytes, or `None` for no Pixel Data element at all.
    pub pixels: Option<Vec<u8>>,
    pub syntax: &'static str,
}

fn us(o: &mut InMemDicomObject, tag: dicom_core::Tag, v: u16) {
    o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

/// A DICOM Part 10 file of `s`.
pub fn file(s: &Spec) -> Vec<u8> {
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(US_IMAGE),
    ));
    o.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from("1.2.3.4.5"),
    ));
    us(&mut o, tags::ROWS, s.rows);
    us(&mut o, tags::COLUMNS, s.cols);
    us(&mut o, tags::SAMPLES_PER_PIXEL, s.samples_per_pixel);
    o.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from(s.photometric),
    ));
    us(&mut o, tags::BITS_ALLOCATED, s.bits);
    us(&mut o, tags::BITS_STORED, s.bits);
    us(&mut o, tags::HIGH_BIT, s.bits - 1);
    us(&mut o, tags::PIXEL_REPRESENTATION, 0);
    if s.samples_per_pixel == 3 {
        us(&mut o, tags::PLANAR_CONFIGURATION, 0);
    }
    if s.frames != 1 {
        o.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from(s.frames.to_string()),
        ));
    }
    if let Some(px) = &s.pixels {
        let vr = if s.bits > 8 { VR::OW } else { VR::OB };
        if s.syntax == EXPLICIT_LE {
            o.put(DataElement::new(
                tags::PIXEL_DATA,
                vr,
                PrimitiveValue::U8(px.clone().into()),
            ));
        } else {
            let seq = PixelFragmentSequence::new(Vec::<u32>::new(), vec![px.clone()]);
            o.put(DataElement::new(tags::PIXEL_DATA, VR::OB, seq));
        }
    }
    let f = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(s.syntax)
                .media_storage_sop_class_uid(US_IMAGE)
                .media_storage_sop_instance_uid("1.2.3.4.5"),
        )
        .unwrap();
    let mut out = Vec::new();
    f.write_all(&mut out).unwrap();
    out
}

/// A valid 8-bit RGB object of `img`.
pub fn rgb(img: &RgbImage) -> Vec<u8> {
    file(&Spec {
        rows: img.height() as u16,
        cols: img.width() as u16,
        frames: 1,
        samples_per_pixel: 3,
        photometric: "RGB",
        bits: 8,
        pixels: Some(img.as_raw().clone()),
        syntax: EXPLICIT_LE,
    })
}

/// A 64×64 grey object with its attributes changed by `f`.
pub fn grey_with(f: impl FnOnce(&mut Spec)) -> Vec<u8> {
    let mut s = Spec {
        rows: 64,
        cols: 64,
        frames: 1,
        samples_per_pixel: 1,
        photometric: "MONOCHROME2",
        bits: 8,
        pixels: Some((0..64 * 64).map(|i| (i % 251) as u8).collect()),
        syntax: EXPLICIT_LE,
    };
    f(&mut s);
    file(&s)
}
