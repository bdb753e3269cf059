//! The bad-input corpus: every kind of broken or awkward input the tool must survive, written
//! by code so that it is reproducible (`cargo run -p birads --example bad_corpus -- DIR` writes
//! it for a look; `tests/bad_inputs.rs` writes it to a temporary folder and asserts, item by
//! item, what `data check`, `predict` and `train` do with it). The documented behaviour is the
//! table in `docs/bad-inputs.md`; [`ITEMS`] is the same table in code.
//!
//! Layout:
//! - `flat/`: a flat folder of images (what `predict` reads; `data check flat` too);
//! - `package/乳腺分类训练数据集/train/<class>/{images,labels}`: a classification package whose
//!   label files are broken in every way listed, plus an unknown class folder;
//! - `package/乳腺特征训练数据集/train/{images,<feature>_labels}`: a feature package with
//!   broken feature labels.
//!
//! Good items sit beside the bad ones so that "the rest of the work is done" can be checked.

#![allow(dead_code)]

pub mod dicom;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayAlphaImage, ImageBuffer, Luma, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a command does with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Used normally (predicted, trained on).
    Used,
    /// Used, with a warning naming the item and this reason.
    Warned(&'static str),
    /// Left out with an error naming the item and a reason containing this text; the rest
    /// of the work is done and the command exits 2 (`data check`: 1). `data check` finds
    /// truncation only with `--decode` (headers only by default).
    Error(&'static str),
    /// Not seen by this command (e.g. a label file for `predict`).
    NotApplicable,
}

use Outcome::*;

/// One corpus entry: where it is, what it is, and what each command does with it.
pub struct Item {
    /// Path relative to the corpus root (the non-UTF-8 name is written separately).
    pub path: &'static str,
    pub what: &'static str,
    pub check: Outcome,
    pub predict: Outcome,
    pub train: Outcome,
    /// `serve`: the file's bytes uploaded to `/v1/predict`.
    pub serve: Outcome,
}

const CLS: &str = "package/乳腺分类训练数据集/train";
const FEA: &str = "package/乳腺特征训练数据集/train";

/// The table. `check` is `birads data check` on `flat/` (image items) or `package/` (label
/// items); `predict` reads `flat/`; `train` is `birads train cls|fea --data package/…`.
pub const ITEMS: &[Item] = &[
    Item {
        path: "flat/truncated.jpg",
        what: "JPEG cut in half",
        check: Error("truncated JPEG"),
        predict: Error("truncated JPEG"),
        train: NotApplicable,
        serve: Error("truncated JPEG"),
    },
    Item {
        path: "flat/truncated.png",
        what: "PNG cut in half",
        check: Error("unexpected end of file"),
        predict: Error("unexpected end of file"),
        train: NotApplicable,
        serve: Error("unexpected end of file"),
    },
    Item {
        path: "flat/zero_bytes.jpg",
        what: "empty file",
        check: Error("empty file"),
        predict: Error("empty file"),
        train: NotApplicable,
        serve: Error("empty body"),
    },
    Item {
        path: "flat/scan.dcm",
        what: "valid 8-bit RGB DICOM",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/dicom_huge.dcm",
        what: "DICOM claiming 65535×65535 pixels",
        check: Error("above the limit"),
        predict: Error("above the limit"),
        train: NotApplicable,
        serve: Error("above the limit"),
    },
    Item {
        path: "flat/dicom_100000_frames.dcm",
        what: "DICOM of 100,000 64×64 frames",
        check: Error("above the limit"),
        predict: Error("above the limit"),
        train: NotApplicable,
        serve: Error("above the limit"),
    },
    Item {
        path: "flat/dicom_no_pixels.dcm",
        what: "DICOM without Pixel Data",
        check: Error("no Pixel Data element"),
        predict: Error("no Pixel Data element"),
        train: NotApplicable,
        serve: Error("no Pixel Data element"),
    },
    Item {
        path: "flat/dicom_jpeg2000.dcm",
        what: "DICOM in JPEG 2000 (no pure-Rust decoder)",
        check: Error("JPEG 2000 (not supported)"),
        predict: Error("JPEG 2000 (not supported)"),
        train: NotApplicable,
        serve: Error("JPEG 2000 (not supported)"),
    },
    Item {
        path: "flat/dicom_truncated.dcm",
        what: "DICOM cut in half",
        check: Error("not a readable DICOM file"),
        predict: Error("not a readable DICOM file"),
        train: NotApplicable,
        serve: Error("not a readable DICOM file"),
    },
    Item {
        path: "flat/dicom_16bit_short.dcm",
        what: "16-bit DICOM with 8 bytes of pixel data",
        check: Error("bytes of pixel data, 8192 expected"),
        predict: Error("bytes of pixel data, 8192 expected"),
        train: NotApplicable,
        serve: Error("bytes of pixel data, 8192 expected"),
    },
    Item {
        path: "flat/dicom_rows_zero.dcm",
        what: "DICOM with Rows = 0",
        check: Error("an empty frame"),
        predict: Error("an empty frame"),
        train: NotApplicable,
        serve: Error("an empty frame"),
    },
    Item {
        path: "flat/text.jpg",
        what: "a text file named .jpg",
        check: Error("not a decodable image"),
        predict: Error("not a decodable image"),
        train: NotApplicable,
        serve: Error("not a decodable image"),
    },
    Item {
        path: "flat/bomb.png",
        what: "PNG header claiming 100000×100000 (decompression bomb)",
        check: Error("above the limit"),
        predict: Error("above the limit"),
        train: NotApplicable,
        serve: Error("above this server's limit"),
    },
    Item {
        path: "flat/sixteen_bit.png",
        what: "16-bit grey PNG",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/cmyk.jpg",
        what: "CMYK JPEG",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/all_black.png",
        what: "all-black image (CutBlack keeps the whole image)",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/one_pixel.png",
        what: "1×1 image",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/extreme_aspect.png",
        what: "3000×4 image",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/grey_alpha.png",
        what: "grey + alpha PNG",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/exif_rotated.jpg",
        what: "JPEG with EXIF orientation 6 (rotated on decode)",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/name with spaces.jpg",
        what: "file name with spaces",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/loop.jpg",
        what: "symlink pointing at itself",
        check: Error("symbolic links"),
        predict: Error("symbolic links"),
        train: NotApplicable,
        serve: NotApplicable,
    },
    Item {
        path: "flat/unreadable.jpg",
        what: "file without read permission (readable anyway when run as root)",
        check: Error("Permission denied"),
        predict: Error("Permission denied"),
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/folder.jpg",
        what: "a directory named .jpg",
        check: Warned("sub-folder"),
        predict: Warned("sub-folder"),
        train: NotApplicable,
        serve: NotApplicable,
    },
    Item {
        path: "flat/twin.jpg",
        what: "same stem as twin.png",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/twin.png",
        what: "same stem as twin.jpg",
        check: Used,
        predict: Used,
        train: NotApplicable,
        serve: Used,
    },
    Item {
        path: "flat/notes.txt",
        what: "a non-image file",
        check: Warned("not an image file"),
        predict: Warned("not an image file"),
        train: NotApplicable,
        serve: NotApplicable,
    },
    // Classification labels (class folder 3类, so the valid id is 2).
    Item {
        path: "package/乳腺分类训练数据集/train/3类/labels/missing_fields.txt",
        what: "YOLO line with 3 fields",
        check: Error("expected 5 fields"),
        predict: NotApplicable,
        train: Error("expected 5 fields"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/labels/letters.txt",
        what: "class id is letters",
        check: Error("not a number"),
        predict: NotApplicable,
        train: Error("not a number"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/labels/nan_box.txt",
        what: "NaN coordinate",
        check: Error("not finite"),
        predict: NotApplicable,
        train: Error("not finite"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/labels/negative_box.txt",
        what: "negative coordinate",
        check: Error("outside [0,1]"),
        predict: NotApplicable,
        train: Error("outside [0,1]"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/labels/over_one_box.txt",
        what: "coordinate above 1",
        check: Error("outside [0,1]"),
        predict: NotApplicable,
        train: Error("outside [0,1]"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/labels/class_zero.txt",
        what: "class 0 in a 1-based file",
        check: Error("out of range"),
        predict: NotApplicable,
        train: Error("out of range"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/labels/class_seven.txt",
        what: "class 7 in a 1-based file",
        check: Error("out of range"),
        predict: NotApplicable,
        train: Error("out of range"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/labels/empty_label.txt",
        what: "empty label file",
        check: Error("empty"),
        predict: NotApplicable,
        train: Error("empty"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/labels/two_lines.txt",
        what: "label file with two objects (first used)",
        check: Warned("2 lines"),
        predict: NotApplicable,
        train: Used,
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/images/twin.jpg",
        what: "same stem as twin.png in one folder",
        check: Error("duplicate stem"),
        predict: NotApplicable,
        train: Error("duplicate stem"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/3类/images/corrupt.jpg",
        what: "labelled image that does not decode",
        check: Error("truncated JPEG"),
        predict: NotApplicable,
        train: Error("truncated JPEG"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺分类训练数据集/train/7类",
        what: "unknown class folder",
        check: Error("unknown class folder"),
        predict: NotApplicable,
        train: Error("unknown class folder"),
        serve: NotApplicable,
    },
    // Feature labels (0/1 ids).
    Item {
        path: "package/乳腺特征训练数据集/train/boundary_labels/feature_two.txt",
        what: "feature id 2 in a 0/1 file",
        check: Error("not 0 or 1"),
        predict: NotApplicable,
        train: Error("not 0 or 1"),
        serve: NotApplicable,
    },
    Item {
        path: "package/乳腺特征训练数据集/train/shape_labels/feature_nan.txt",
        what: "NaN feature id",
        check: Error("not an integer"),
        predict: NotApplicable,
        train: Error("not an integer"),
        serve: NotApplicable,
    },
];

/// The valid images of `flat/` besides the awkward-but-valid items above.
/// (The non-UTF-8 name is predicted, with a warning: its CSV name has U+FFFD.)
pub const FLAT_GOOD: &[&str] = &["flat/good_1.jpg", "flat/good_2.png"];

/// The non-UTF-8 file name in `flat/` (a valid JPEG): bytes `bad_\xff_name.jpg`.
pub const NON_UTF8: &[u8] = b"bad_\xff_name.jpg";

fn synthetic(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let spec = birads_data::synth::sample_spec(&mut rng);
    birads_data::synth::render(&spec, w.max(64), h.max(64), &mut rng).0
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .unwrap();
    out
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A PNG chunk: length, type, data, CRC over type and data.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    c.extend_from_slice(&h.finalize().to_be_bytes());
    c
}

/// A well-formed PNG header for a `width`×`height` RGB image, then a tiny IDAT and IEND: at
/// 100000×100000 a decoder that trusts the header would try to allocate 30 GB.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend(chunk(b"IHDR", &ihdr));
    out.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A CMYK JPEG (as some scanners and print tools write them).
fn cmyk_jpeg(w: usize, h: usize) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_CMYK);
    c.set_size(w, h);
    c.set_quality(90.0);
    let mut started = c.start_compress(Vec::new()).unwrap();
    let mut px = Vec::with_capacity(w * h * 4);
    for y in 0..h {
        for x in 0..w {
            px.extend_from_slice(&[(x * 2) as u8, (y * 2) as u8, 40, 30]);
        }
    }
    started.write_scanlines(&px).unwrap();
    started.finish().unwrap()
}

/// A JPEG with an EXIF APP1 segment saying orientation 6 (rotate 90° clockwise on display).
fn exif_rotated_jpeg(img: &RgbImage) -> Vec<u8> {
    let plain = jpeg(img);
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&[0x00, 0x06, 0x00, 0x00]); // value 6, padded
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend(tiff);
    let mut out = plain[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend(payload);
    out.extend_from_slice(&plain[2..]);
    out
}

fn write(root: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

/// The DICOM items of `flat/`: one valid, seven malformed.
fn write_dicoms(root: &Path) {
    let scan = dicom::rgb(&synthetic(160, 120, 5));
    write(root, "flat/scan.dcm", &scan);
    let huge = dicom::grey_with(|s| (s.rows, s.cols) = (65535, 65535));
    write(root, "flat/dicom_huge.dcm", &huge);
    write(
        root,
        "flat/dicom_100000_frames.dcm",
        &dicom::grey_with(|s| s.frames = 100_000),
    );
    write(
        root,
        "flat/dicom_no_pixels.dcm",
        &dicom::grey_with(|s| s.pixels = None),
    );
    let j2k = dicom::grey_with(|s| {
        s.syntax = dicom::JPEG_2000;
        s.pixels = Some(vec![0xff, 0x4f, 0xff, 0x51, 0, 0, 0, 0]);
    });
    write(root, "flat/dicom_jpeg2000.dcm", &j2k);
    write(root, "flat/dicom_truncated.dcm", &scan[..scan.len() / 2]);
    let short = dicom::grey_with(|s| {
        s.bits = 16;
        s.pixels = Some(vec![1; 8]);
    });
    write(root, "flat/dicom_16bit_short.dcm", &short);
    write(
        root,
        "flat/dicom_rows_zero.dcm",
        &dicom::grey_with(|s| s.rows = 0),
    );
}

/// Writes the whole corpus under `root` (created). Returns `root`.
pub fn write_corpus(root: &Path) -> PathBuf {
    let good = synthetic(200, 160, 1);
    let good_jpg = jpeg(&good);
    write_flat(root, &good, &good_jpg);
    write_dicoms(root);
    write_cls_package(root, &good, &good_jpg);
    write_fea_package(root);
    root.to_path_buf()
}

/// `flat/`: good images beside every kind of broken, odd or unreadable file, and the DICOMs.
fn write_flat(root: &Path, good: &RgbImage, good_jpg: &[u8]) {
    write(root, "flat/good_1.jpg", good_jpg);
    write(
        root,
        "flat/good_2.png",
        &png(&DynamicImage::ImageRgb8(synthetic(180, 220, 2))),
    );
    write(root, "flat/truncated.jpg", &good_jpg[..good_jpg.len() / 2]);
    let p = png(&DynamicImage::ImageRgb8(synthetic(160, 160, 3)));
    write(root, "flat/truncated.png", &p[..p.len() / 2]);
    write(root, "flat/zero_bytes.jpg", b"");
    write(
        root,
        "flat/text.jpg",
        b"This is not a JPEG, just text with the wrong name.\n",
    );
    write(root, "flat/bomb.png", &png_header_only(100_000, 100_000));
    let grey16: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(120, 90, |x, y| Luma([(x * 500 + y * 200) as u16]));
    write(
        root,
        "flat/sixteen_bit.png",
        &png(&DynamicImage::ImageLuma16(grey16)),
    );
    write(root, "flat/cmyk.jpg", &cmyk_jpeg(96, 72));
    write(
        root,
        "flat/all_black.png",
        &png(&DynamicImage::ImageRgb8(RgbImage::new(200, 150))),
    );
    write(
        root,
        "flat/one_pixel.png",
        &png(&DynamicImage::ImageRgb8(RgbImage::from_pixel(
            1,
            1,
            image::Rgb([90, 90, 90]),
        ))),
    );
    let wide = RgbImage::from_fn(3000, 4, |x, _| image::Rgb([(x % 256) as u8; 3]));
    write(
        root,
        "flat/extreme_aspect.png",
        &png(&DynamicImage::ImageRgb8(wide)),
    );
    let ga = GrayAlphaImage::from_fn(100, 80, |x, y| image::LumaA([(x + y) as u8, 128]));
    write(
        root,
        "flat/grey_alpha.png",
        &png(&DynamicImage::ImageLumaA8(ga)),
    );
    write(
        root,
        "flat/exif_rotated.jpg",
        &exif_rotated_jpeg(&synthetic(160, 100, 4)),
    );
    write(root, "flat/name with spaces.jpg", good_jpg);
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(NON_UTF8);
        fs::write(root.join("flat").join(name), good_jpg).unwrap();
    }
    std::os::unix::fs::symlink("loop.jpg", root.join("flat/loop.jpg")).unwrap();
    let unreadable = write(root, "flat/unreadable.jpg", good_jpg);
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000)).unwrap();
    }
    fs::create_dir_all(root.join("flat/folder.jpg")).unwrap();
    write(root, "flat/twin.jpg", good_jpg);
    write(
        root,
        "flat/twin.png",
        &png(&DynamicImage::ImageRgb8(good.clone())),
    );
    write(root, "flat/notes.txt", b"not an image\n");
}

/// The classification package: four good images in each of 2类 and 3类 (enough to train),
/// bad labels, twins, a corrupt image and a class folder out of range.
fn write_cls_package(root: &Path, good: &RgbImage, good_jpg: &[u8]) {
    let box_line = |c: usize| format!("{c} 0.5 0.5 0.3 0.2\n");
    for (class, id) in [("2类", 1usize), ("3类", 2)] {
        for i in 0..4u64 {
            let stem = format!("good_{class}_{i}").replace('类', "");
            let img = jpeg(&synthetic(160, 140, 10 + i + 10 * id as u64));
            write(root, &format!("{CLS}/{class}/images/{stem}.jpg"), &img);
            write(
                root,
                &format!("{CLS}/{class}/labels/{stem}.txt"),
                box_line(id).as_bytes(),
            );
        }
    }
    let bad_labels: [(&str, &str); 9] = [
        ("missing_fields", "2 0.5 0.5\n"),
        ("letters", "b 0.5 0.5 0.2 0.2\n"),
        ("nan_box", "2 nan 0.5 0.2 0.2\n"),
        ("negative_box", "2 -0.4 0.5 0.2 0.2\n"),
        ("over_one_box", "2 0.5 1.6 0.2 0.2\n"),
        ("class_zero", "0 0.5 0.5 0.2 0.2\n"),
        ("class_seven", "7 0.5 0.5 0.2 0.2\n"),
        ("empty_label", ""),
        ("two_lines", "2 0.5 0.5 0.2 0.2\n2 0.3 0.3 0.1 0.1\n"),
    ];
    for (i, (stem, text)) in bad_labels.iter().enumerate() {
        let img = jpeg(&synthetic(150, 130, 100 + i as u64));
        write(root, &format!("{CLS}/3类/images/{stem}.jpg"), &img);
        write(
            root,
            &format!("{CLS}/3类/labels/{stem}.txt"),
            text.as_bytes(),
        );
    }
    write(root, &format!("{CLS}/3类/images/twin.jpg"), good_jpg);
    write(
        root,
        &format!("{CLS}/3类/images/twin.png"),
        &png(&DynamicImage::ImageRgb8(good.clone())),
    );
    write(
        root,
        &format!("{CLS}/3类/labels/twin.txt"),
        box_line(2).as_bytes(),
    );
    write(
        root,
        &format!("{CLS}/3类/images/corrupt.jpg"),
        &good_jpg[..good_jpg.len() / 3],
    );
    write(
        root,
        &format!("{CLS}/3类/labels/corrupt.txt"),
        box_line(2).as_bytes(),
    );
    write(root, &format!("{CLS}/7类/images/stray.jpg"), good_jpg);
    write(
        root,
        &format!("{CLS}/7类/labels/stray.txt"),
        box_line(7).as_bytes(),
    );
}

/// The feature package: six good images with all four labels, two with a broken one.
fn write_fea_package(root: &Path) {
    let features = ["boundary", "calcification", "direction", "shape"];
    for i in 0..8u64 {
        let stem = match i {
            6 => "feature_two".to_string(),
            7 => "feature_nan".to_string(),
            _ => format!("good_{i}"),
        };
        write(
            root,
            &format!("{FEA}/images/{stem}.jpg"),
            &jpeg(&synthetic(150, 150, 200 + i)),
        );
        for (k, f) in features.iter().enumerate() {
            let v = (i as usize + k) % 2;
            let text = match (stem.as_str(), *f) {
                ("feature_two", "boundary") => "2 0.5 0.5 0.3 0.3\n".to_string(),
                ("feature_nan", "shape") => "nan 0.5 0.5 0.3 0.3\n".to_string(),
                _ => format!("{v} 0.5 0.5 0.3 0.3\n"),
            };
            write(
                root,
                &format!("{FEA}/{f}_labels/{stem}.txt"),
                text.as_bytes(),
            );
        }
    }
}
