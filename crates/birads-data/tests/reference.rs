//! Image operations against fixtures made by `scripts/make_fixtures.py` with Pillow and
//! numpy (the libraries the original program used).

use std::path::{Path, PathBuf};

use birads_data::image_ops::{
    cut_black_box, decode_path, resize_bilinear, CropBox, CutBlackParams,
};
use image::RgbImage;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The shared BUS-BRA copy beside the repository (CI provides it at ../shared).
pub fn busbra() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/bus-bra");
    assert!(
        p.join("labels.csv").is_file(),
        "BUS-BRA not found at {} (expected ../shared beside the clone)",
        p.display()
    );
    p
}

fn read_boxes(csv_path: &Path) -> Vec<(String, u32, u32, CropBox)> {
    let mut rdr = csv::Reader::from_path(csv_path).unwrap();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            let n = |i: usize| r[i].parse::<u32>().unwrap();
            (
                r[0].to_string(),
                n(1),
                n(2),
                CropBox {
                    x0: n(3),
                    y0: n(4),
                    x1: n(5),
                    y1: n(6),
                },
            )
        })
        .collect()
}

#[test]
fn cut_black_matches_reference_on_every_busbra_image() {
    let dir = busbra().join("images");
    let cases = read_boxes(&fixtures().join("cutblack_busbra.csv"));
    assert_eq!(cases.len(), 1875);
    let cropped = cases
        .iter()
        .filter(|(_, w, h, b)| *b != CropBox::full(*w, *h))
        .count();
    assert!(
        cropped > 50,
        "fixture should exercise real crops, has {cropped}"
    );
    let mut mismatches = Vec::new();
    for (name, w, h, want) in &cases {
        let img = decode_path(&dir.join(name)).unwrap();
        assert_eq!(img.dimensions(), (*w, *h), "{name}");
        let got = cut_black_box(&img, &CutBlackParams::default());
        if got != *want {
            mismatches.push(format!("{name}: got {got:?}, reference {want:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn cut_black_matches_reference_on_crafted_cases() {
    let cases = read_boxes(&fixtures().join("cutblack_cases.csv"));
    assert!(cases.len() >= 10);
    for (name, w, h, want) in cases {
        let img = decode_path(&fixtures().join("cutblack_cases").join(&name)).unwrap();
        assert_eq!(img.dimensions(), (w, h));
        assert_eq!(
            cut_black_box(&img, &CutBlackParams::default()),
            want,
            "{name}"
        );
    }
}

/// Same formulas as `pattern()` in scripts/make_fixtures.py.
pub fn pattern(kind: &str, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (x, y, w, h) = (x as i64, y as i64, w as i64, h as i64);
        let (r, g, b) = match kind {
            "gradient" => (
                x * 255 / (w - 1).max(1),
                y * 255 / (h - 1).max(1),
                (x + y) * 255 / (w + h - 2).max(1),
            ),
            "texture" => (
                (x * 7 + y * 13 + (x * y) % 31) % 256,
                (x * x + 3 * y) % 256,
                ((x / 8 + y / 8) % 2) * 200 + (x % 5) * 11,
            ),
            "stripes" => (
                if (x / 3) % 2 == 0 { 250 } else { 5 },
                if (y / 2) % 2 == 0 { 240 } else { 20 },
                (x * 3 + y * 5) % 256,
            ),
            _ => unreachable!(),
        };
        image::Rgb([
            r.clamp(0, 255) as u8,
            g.clamp(0, 255) as u8,
            b.clamp(0, 255) as u8,
        ])
    })
}

#[test]
fn resize_matches_pillow_bilinear() {
    let dir = fixtures().join("resize");
    let mut n = 0;
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        // <kind>_<sw>x<sh>_to_<dw>x<dh>
        let parts: Vec<&str> = name.split('_').collect();
        let dims = |s: &str| -> (u32, u32) {
            let (a, b) = s.split_once('x').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let (sw, sh) = dims(parts[1]);
        let (dw, dh) = dims(parts[3]);
        let want = image::open(&path).unwrap().to_rgb8();
        let got = resize_bilinear(&pattern(parts[0], sw, sh), dw, dh);
        assert_eq!(got.dimensions(), want.dimensions());
        let differing = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        eprintln!("{name}: {differing}");
        if differing > 0 {
            bad.push(format!("{name}: {differing}"));
        }
        n += 1;
    }
    assert!(bad.is_empty(), "values differing from Pillow's: {bad:?}");
    assert!(n >= 7, "expected the resize fixtures, found {n}");
}

fn diff_stats(a: &RgbImage, b: &RgbImage) -> (usize, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    let d: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    (
        d.iter().filter(|v| **v != 0).count(),
        *d.iter().max().unwrap(),
    )
}

#[test]
fn affine_matches_torchvision_on_pil() {
    use birads_data::augment::{apply_affine, Affine};
    let src = pattern("texture", 97, 83);
    let mut rdr = csv::Reader::from_path(fixtures().join("affine.csv")).unwrap();
    let mut n = 0;
    for r in rdr.records() {
        let r = r.unwrap();
        let f = |i: usize| r[i].parse::<f32>().unwrap();
        let t = Affine {
            angle: f(1),
            tx: f(2),
            ty: f(3),
            scale: f(4),
            shear_x: f(5),
            shear_y: 0.0,
        };
        let want = image::open(fixtures().join("affine").join(&r[0]))
            .unwrap()
            .to_rgb8();
        let (got, _) = apply_affine(&src, &t, None);
        let (differing, _) = diff_stats(&got, &want);
        // Pillow's 16.16 fixed-point stepping reproduced: identical pixels.
        assert_eq!(
            differing, 0,
            "{}: {differing} differing values for {t:?}",
            &r[0]
        );
        n += 1;
    }
    assert!(n >= 7);
}

#[test]
fn gaussian_blur_matches_torchvision_on_pil() {
    use birads_data::augment::gaussian_blur;
    let src = pattern("texture", 97, 83);
    for sigma in [0.1f32, 0.6, 1.3, 2.0] {
        let want = image::open(fixtures().join("blur").join(format!("blur_{sigma:?}.png")))
            .unwrap()
            .to_rgb8();
        let got = gaussian_blur(&src, 5, sigma);
        let (differing, max) = diff_stats(&got, &want);
        // Separable f32 sums round differently from a 2-D convolution only at exact .5 ties.
        assert!(max <= 1, "sigma {sigma}: max diff {max}");
        assert!(
            differing * 1000 <= got.as_raw().len(),
            "sigma {sigma}: {differing} values differ"
        );
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// (name, width, height, sha256 of Pillow's `convert('RGB')` pixels).
fn read_digests(csv_path: &Path) -> Vec<(String, u32, u32, String)> {
    csv::Reader::from_path(csv_path)
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[0].to_string(),
                r[1].parse().unwrap(),
                r[2].parse().unwrap(),
                r[3].to_string(),
            )
        })
        .collect()
}

/// Every image listed in `digests` (found in `dir`) decodes to Pillow's pixels.
fn check_digests(digests: &str, dir: &Path, at_least: usize) {
    let cases = read_digests(&fixtures().join(digests));
    assert!(cases.len() >= at_least, "{digests}: {} cases", cases.len());
    for (name, w, h, digest) in cases {
        let img = decode_path(&dir.join(&name)).unwrap();
        assert_eq!(img.dimensions(), (w, h), "{name}");
        assert_eq!(
            sha256_hex(img.as_raw()),
            digest,
            "{name}: pixels differ from Pillow's"
        );
    }
}

#[test]
fn jpeg_decoding_is_bit_identical_to_pillow() {
    check_digests("decode.csv", &fixtures().join("decode"), 6);
}

#[test]
fn busbra_decoding_is_bit_identical_to_pillow() {
    check_digests("decode_busbra.csv", &busbra().join("images"), 180);
}

#[test]
fn truncated_and_corrupt_jpegs_are_errors_not_grey_images() {
    let bytes = std::fs::read(fixtures().join("decode/c420.jpg")).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 40, 600] {
        let err = birads_data::image_ops::decode_bytes(&bytes[..cut]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "cut at {cut}: {err}");
    }
    for junk in [&b"\xff\xd8\xff"[..], b"\xff\xd8\xff\xe0not a jpeg at all"] {
        assert!(birads_data::image_ops::decode_bytes(junk).is_err());
    }
    // The whole file still decodes after the failures (no state left behind).
    assert!(birads_data::image_ops::decode_bytes(&bytes).is_ok());
}
