//! Deterministic image operations of the inference chain, each matching what the original
//! Python program did (PIL + numpy + torchvision), so that weights trained there see the same
//! pixels here: decode → CutBlack → CenterCrop → Resize → ToTensor + Normalize.

use std::io::{BufRead, Seek};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::sample::ImageSource;

/// ImageNet statistics used by torchvision's `Normalize` in the original program.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Largest decoded image accepted, in pixels. Ultrasound frames are well under 10 MP; a
/// header claiming more is a decompression bomb or a corrupt file.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a decodable image: {0}")]
    Image(#[from] image::ImageError),
    #[error("image is {width}×{height} pixels, above the limit of {MAX_PIXELS} pixels")]
    TooLarge { width: u32, height: u32 },
    #[error("image has zero width or height")]
    Empty,
    #[error("empty file (0 bytes)")]
    EmptyFile,
    #[error("{0}")]
    Dicom(#[from] crate::dicom::DicomError),
}

fn decode_reader<R: BufRead + Seek>(reader: ImageReader<R>) -> Result<RgbImage, DecodeError> {
    let mut reader = reader.with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let mut decoder = reader.into_decoder()?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(DecodeError::Empty);
    }
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(DecodeError::TooLarge { width, height });
    }
    // A broken EXIF block should not lose an otherwise readable image.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    Ok(to_rgb8(img))
}

/// Grey, grey+alpha, RGBA and 16-bit images all become 8-bit RGB, as PIL's
/// `convert('RGB')` does (alpha is dropped, not composited).
fn to_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// Decode a JPEG/PNG/BMP file to 8-bit RGB, applying its EXIF orientation.
impl DecodeError {
    /// The image is refused for its size (a decompression-bomb guard), not for its bytes.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            DecodeError::TooLarge { .. }
                | DecodeError::Dicom(crate::dicom::DicomError::TooLarge { .. })
        )
    }
}

pub fn decode_path(path: &Path) -> Result<RgbImage, DecodeError> {
    decode_bytes(&std::fs::read(path)?)
}

/// Decode in-memory bytes (an upload) to 8-bit RGB, applying its EXIF orientation.
pub fn decode_bytes(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::EmptyFile);
    }
    if crate::dicom::is_dicom(bytes) {
        return Ok(crate::dicom::decode_dicom(bytes, None)?);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        if let Some(img) = jpeg::decode(bytes)? {
            return Ok(img);
        }
    }
    decode_reader(ImageReader::new(std::io::Cursor::new(bytes)))
}

pub fn decode(source: &ImageSource) -> Result<RgbImage, DecodeError> {
    match source {
        ImageSource::Path(p) => decode_path(p),
        ImageSource::Bytes { data, .. } => decode_bytes(data),
    }
}

/// JPEG decoding with libjpeg-turbo's code, so pixels equal Pillow's bit for bit (its IDCT,
/// chroma upsampling and colour conversion differ from other decoders by ±1 here and there,
/// which moves model outputs by ~1e-4). An exception to "prefer a maintained crate over
/// hand-written code": this module only adapts `mozjpeg`'s error handling to ours.
mod jpeg {
    use super::{DecodeError, MAX_PIXELS};
    use image::{ImageDecoder, RgbImage};
    use mozjpeg_sys::{jpeg_common_struct, jpeg_std_error, JWRN_JPEG_EOF, J_COLOR_SPACE};

    /// Fatal libjpeg errors unwind (mozjpeg-sys is built with `unwinding`) with the message.
    extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
        let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code).unwrap_or(-1) };
        std::panic::resume_unwind(Box::new(format!("libjpeg error code {code}")));
    }

    /// Warnings are ignored as Pillow ignores them, except a premature end of data: Pillow
    /// refuses truncated files ("image file is truncated"), and so do we.
    extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: std::os::raw::c_int) {
        let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code).unwrap_or(0) };
        if level < 0 && code == JWRN_JPEG_EOF {
            std::panic::resume_unwind(Box::new(
                "truncated JPEG (premature end of data)".to_string(),
            ));
        }
    }

    fn error_manager() -> mozjpeg_sys::jpeg_error_mgr {
        // SAFETY: jpeg_std_error fills every field of a zeroed plain-C struct.
        let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
        unsafe { jpeg_std_error(&mut err) };
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        err
    }

    fn message(payload: Box<dyn std::any::Any + Send>) -> String {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "libjpeg failed".into())
    }

    fn bad(msg: impl Into<String>) -> DecodeError {
        DecodeError::Image(image::ImageError::Decoding(
            image::error::DecodingError::new(
                image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg),
                msg.into(),
            ),
        ))
    }

    /// `Ok(None)` for CMYK/YCCK files, which libjpeg cannot turn into RGB (the general
    /// decoder handles them).
    pub fn decode(bytes: &[u8]) -> Result<Option<RgbImage>, DecodeError> {
        let run = || -> Result<Option<(u32, u32, Vec<u8>)>, DecodeError> {
            let d = mozjpeg::Decompress::with_err(error_manager())
                .from_mem(bytes)
                .map_err(|e| bad(e.to_string()))?;
            if matches!(
                d.color_space(),
                J_COLOR_SPACE::JCS_CMYK | J_COLOR_SPACE::JCS_YCCK
            ) {
                return Ok(None);
            }
            let (w, h) = d.size();
            if w == 0 || h == 0 {
                return Err(DecodeError::Empty);
            }
            if w as u64 * h as u64 > MAX_PIXELS {
                return Err(DecodeError::TooLarge {
                    width: w as u32,
                    height: h as u32,
                });
            }
            let mut started = d.rgb().map_err(|e| bad(e.to_string()))?;
            let pixels = started
                .read_scanlines::<u8>()
                .map_err(|e| bad(e.to_string()))?;
            started.finish().map_err(|e| bad(e.to_string()))?;
            Ok(Some((w as u32, h as u32, pixels)))
        };
        let decoded = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(r) => r?,
            Err(payload) => return Err(bad(message(payload))),
        };
        let Some((w, h, pixels)) = decoded else {
            return Ok(None);
        };
        let mut img = RgbImage::from_raw(w, h, pixels).ok_or_else(|| bad("short image data"))?;
        // EXIF orientation: the header parser of the general decoder reads it.
        if let Ok(mut dec) = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes)) {
            if let Ok(o) = dec.orientation() {
                let mut dynamic = image::DynamicImage::ImageRgb8(img);
                dynamic.apply_orientation(o);
                img = dynamic.into_rgb8();
            }
        }
        Ok(Some(img))
    }
}

/// Image size from the header only (fast; used by `data check`).
pub fn dimensions(path: &Path) -> Result<(u32, u32), DecodeError> {
    if std::fs::metadata(path)?.len() == 0 {
        return Err(DecodeError::EmptyFile);
    }
    // DICOM has no cheap header path here: decode the (middle) frame.
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
    {
        let img = decode_path(path)?;
        return Ok(img.dimensions());
    }
    let (width, height) = ImageReader::open(path)?
        .with_guessed_format()?
        .into_dimensions()?;
    // The same guards as decoding, so a header-only check reports what decoding would refuse.
    if width == 0 || height == 0 {
        return Err(DecodeError::Empty);
    }
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(DecodeError::TooLarge { width, height });
    }
    Ok((width, height))
}

/// Image size from in-memory bytes, header only (a server's pixel limit is checked with it
/// before anything is decoded).
pub fn dimensions_of_bytes(bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
    Ok(ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()?
        .into_dimensions()?)
}

/// A pixel rectangle: `x0..x1` × `y0..y1` (exclusive ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CropBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl CropBox {
    pub fn full(width: u32, height: u32) -> Self {
        Self {
            x0: 0,
            y0: 0,
            x1: width,
            y1: height,
        }
    }
    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }
    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }
}

/// Parameters of CutBlack; the defaults are the original program's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CutBlackParams {
    /// A pixel is black when all three channels are ≤ this.
    pub threshold: u8,
    /// A column (row) is trimmed while more than this fraction of it is black.
    pub black_ratio: f32,
    /// Crops narrower or shorter than this keep the original image.
    pub min_width: u32,
    pub min_height: u32,
}

impl Default for CutBlackParams {
    fn default() -> Self {
        Self {
            threshold: 10,
            black_ratio: 0.5,
            min_width: 200,
            min_height: 200,
        }
    }
}

/// The crop box CutBlack chooses, reproducing the original numpy code exactly, quirks
/// included: columns are scanned from each edge towards the middle over the full height and
/// rows over the full width of the *original* image; on the right (bottom) side the exclusive
/// end becomes `x − 1` for the last black column `x`, so one extra non-black column goes too.
/// When the crop would be narrower or shorter than the minimum, the whole image is kept.
pub fn cut_black_box(img: &RgbImage, p: &CutBlackParams) -> CropBox {
    let (w, h) = img.dimensions();
    let full = CropBox::full(w, h);
    if w == 0 || h == 0 {
        return full;
    }
    let t = p.threshold;
    let raw = img.as_raw();
    let stride = w as usize * 3;
    // Black pixels per column and per row in one pass over the image.
    let mut col_black = vec![0u32; w as usize];
    let mut row_black = vec![0u32; h as usize];
    for y in 0..h as usize {
        let row = &raw[y * stride..(y + 1) * stride];
        let mut count = 0u32;
        for (x, px) in row.chunks_exact(3).enumerate() {
            if px[0] <= t && px[1] <= t && px[2] <= t {
                col_black[x] += 1;
                count += 1;
            }
        }
        row_black[y] = count;
    }
    // numpy compares `black / n > ratio` in float64.
    let col_is_black = |x: usize| col_black[x] as f64 / h as f64 > p.black_ratio as f64;
    let row_is_black = |y: usize| row_black[y] as f64 / w as f64 > p.black_ratio as f64;

    let (left, right) = scan_edges(w as i64, col_is_black);
    let (top, bottom) = scan_edges(h as i64, row_is_black);
    let cw = (right - left).max(0);
    let ch = (bottom - top).max(0);
    if cw < p.min_width as i64 || ch < p.min_height as i64 {
        return full;
    }
    CropBox {
        x0: left as u32,
        y0: top as u32,
        x1: right as u32,
        y1: bottom as u32,
    }
}

/// One axis of CutBlack: from the start towards the middle, the start moves past each black
/// line; from the end (down to `len/2 + 1`), the exclusive end becomes `x − 1` for each black
/// line `x` — the original's off-by-one, kept so boxes match.
fn scan_edges(len: i64, is_black: impl Fn(usize) -> bool) -> (i64, i64) {
    let mut start = 0;
    for x in 0..len / 2 {
        if !is_black(x as usize) {
            break;
        }
        start = x + 1;
    }
    let mut end = len;
    for x in (len / 2 + 1..len).rev() {
        if !is_black(x as usize) {
            break;
        }
        end = x - 1;
    }
    (start, end)
}

/// Copy a rectangle out of an image; parts outside the image are black (zero).
pub fn crop_padded(img: &RgbImage, x0: i64, y0: i64, width: u32, height: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(width, height);
    let src = img.as_raw();
    let dst_stride = width as usize * 3;
    let src_stride = w as usize * 3;
    // Overlap of the requested rectangle with the image, in source coordinates.
    let sx0 = x0.clamp(0, w as i64);
    let sx1 = (x0 + width as i64).clamp(0, w as i64);
    let sy0 = y0.clamp(0, h as i64);
    let sy1 = (y0 + height as i64).clamp(0, h as i64);
    if sx0 >= sx1 || sy0 >= sy1 {
        return out;
    }
    let n = (sx1 - sx0) as usize * 3;
    let dst = out.as_mut();
    for sy in sy0..sy1 {
        let dy = (sy - y0) as usize;
        let dx = (sx0 - x0) as usize;
        let s = sy as usize * src_stride + sx0 as usize * 3;
        let d = dy * dst_stride + dx * 3;
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    }
    out
}

pub fn crop(img: &RgbImage, b: CropBox) -> RgbImage {
    crop_padded(img, b.x0 as i64, b.y0 as i64, b.width(), b.height())
}

/// CutBlack: trim black borders (see [`cut_black_box`]). Returns the crop and its box.
pub fn cut_black(img: &RgbImage, p: &CutBlackParams) -> (RgbImage, CropBox) {
    let b = cut_black_box(img, p);
    if b == CropBox::full(img.width(), img.height()) {
        (img.clone(), b)
    } else {
        (crop(img, b), b)
    }
}

/// Python's `round()`: halves go to the even neighbour (torchvision's CenterCrop uses it).
fn round_half_even(v: f64) -> i64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 {
        let f = v.floor() as i64;
        if f % 2 == 0 {
            f
        } else {
            f + 1
        }
    } else {
        r as i64
    }
}

/// Top-left corner, in source coordinates, of torchvision's `CenterCrop(size)`: zero padding
/// (left/top gets `(size − w) // 2`) when the image is smaller, then a crop starting at
/// `round((w − size) / 2)` with Python's banker's rounding.
pub fn center_crop_origin(w: u32, h: u32, cw: u32, ch: u32) -> (i64, i64) {
    let axis = |len: u32, c: u32| -> i64 {
        if c > len {
            -(((c - len) / 2) as i64)
        } else {
            round_half_even((len - c) as f64 / 2.0)
        }
    };
    (axis(w, cw), axis(h, ch))
}

/// torchvision `CenterCrop((ch, cw))` on a PIL image, zero padding included.
pub fn center_crop(img: &RgbImage, cw: u32, ch: u32) -> RgbImage {
    let (x0, y0) = center_crop_origin(img.width(), img.height(), cw, ch);
    crop_padded(img, x0, y0, cw, ch)
}

/// Resize exactly as Pillow's `resize(size, BILINEAR)` does for 8-bit RGB (the resize
/// torchvision's `Resize` ran on PIL images): antialiased when shrinking, bit for bit.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    resample::resize(
        img,
        (0.0, 0.0, img.width() as f64, img.height() as f64),
        width,
        height,
    )
}

/// Pillow's `resize(size, BILINEAR, box=(left, top, left + w, top + h))`: resize a
/// sub-rectangle given in fractional source pixels.
pub fn resize_bilinear_box(
    img: &RgbImage,
    rect: (f64, f64, f64, f64),
    width: u32,
    height: u32,
) -> RgbImage {
    let (l, t, w, h) = rect;
    resample::resize(img, (l, t, l + w, t + h), width, height)
}

/// Pillow's separable resampling (`Resample.c`) for 8-bit RGB with the bilinear (triangle)
/// filter. Written here rather than taken from `fast_image_resize` because that crate rounds
/// its fixed-point coefficients differently and lands ±1 off Pillow on some pixels, which is
/// enough to move model outputs by ~1e-5; the competition entry point must reproduce the
/// original's numbers. The arithmetic below follows Pillow's: coefficients in f64,
/// normalised, quantised to 22 fractional bits with round-half-away, horizontal pass (only
/// over the rows the vertical pass reads) clipped to 8 bits, then the vertical pass.
mod resample {
    use image::RgbImage;

    const PRECISION_BITS: u32 = 32 - 8 - 2;

    /// Per output pixel: first source index, tap count, and `ksize` quantised weights.
    struct Coeffs {
        ksize: usize,
        bounds: Vec<(usize, usize)>,
        weights: Vec<i32>,
    }

    fn triangle(x: f64) -> f64 {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    }

    fn coeffs(in_size: usize, in0: f64, in1: f64, out_size: usize) -> Coeffs {
        // Pillow keeps the box in single precision (and subtracts in it).
        let (in0, in1) = (in0 as f32, in1 as f32);
        let scale = (in1 - in0) as f64 / out_size as f64;
        let in0 = in0 as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // the bilinear filter's support is 1.0
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = in0 + (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin as i64).max(0) as usize;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = triangle((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for x in 0..n {
                let v = if ww != 0.0 { k[x] / ww } else { k[x] };
                let scaled = v * (1u32 << PRECISION_BITS) as f64;
                row[x] = if v < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            bounds.push((xmin, n));
        }
        Coeffs {
            ksize,
            bounds,
            weights,
        }
    }

    #[inline]
    fn clip8(v: i32) -> u8 {
        (v >> PRECISION_BITS).clamp(0, 255) as u8
    }

    /// One horizontal pass: `rows` rows of `src` (width `iw`) starting at `row0` → width `ow`.
    fn horizontal(
        src: &[u8],
        iw: usize,
        row0: usize,
        rows: usize,
        c: &Coeffs,
        ow: usize,
    ) -> Vec<u8> {
        // A fixed tap count lets the compiler unroll the inner loop; windows are slid inside
        // the row and padded with zero weights, which leaves the sums unchanged.
        match c.ksize {
            3 if iw >= 3 => horizontal_fixed::<3>(src, iw, row0, rows, c, ow),
            5 if iw >= 5 => horizontal_fixed::<5>(src, iw, row0, rows, c, ow),
            7 if iw >= 7 => horizontal_fixed::<7>(src, iw, row0, rows, c, ow),
            9 if iw >= 9 => horizontal_fixed::<9>(src, iw, row0, rows, c, ow),
            _ => horizontal_any(src, iw, row0, rows, c, ow),
        }
    }

    fn horizontal_fixed<const K: usize>(
        src: &[u8],
        iw: usize,
        row0: usize,
        rows: usize,
        c: &Coeffs,
        ow: usize,
    ) -> Vec<u8> {
        let half = 1i32 << (PRECISION_BITS - 1);
        // Per output pixel: window start and K weights aligned to it.
        let mut starts = Vec::with_capacity(ow);
        let mut weights = vec![[0i32; K]; ow];
        for (xx, w) in weights.iter_mut().enumerate() {
            let (xmin, n) = c.bounds[xx];
            let start = xmin.min(iw - K);
            for i in 0..n {
                w[xmin - start + i] = c.weights[xx * c.ksize + i];
            }
            starts.push(start);
        }
        let mut out = vec![0u8; rows * ow * 3];
        for y in 0..rows {
            let line = &src[(y + row0) * iw * 3..(y + row0 + 1) * iw * 3];
            let dst = &mut out[y * ow * 3..(y + 1) * ow * 3];
            for ((px, &start), k) in dst.chunks_exact_mut(3).zip(&starts).zip(&weights) {
                let taps: &[u8] = &line[start * 3..start * 3 + K * 3];
                let (mut s0, mut s1, mut s2) = (half, half, half);
                for t in 0..K {
                    s0 += taps[t * 3] as i32 * k[t];
                    s1 += taps[t * 3 + 1] as i32 * k[t];
                    s2 += taps[t * 3 + 2] as i32 * k[t];
                }
                px[0] = clip8(s0);
                px[1] = clip8(s1);
                px[2] = clip8(s2);
            }
        }
        out
    }

    fn horizontal_any(
        src: &[u8],
        iw: usize,
        row0: usize,
        rows: usize,
        c: &Coeffs,
        ow: usize,
    ) -> Vec<u8> {
        let half = 1i32 << (PRECISION_BITS - 1);
        let mut out = vec![0u8; rows * ow * 3];
        for y in 0..rows {
            let line = &src[(y + row0) * iw * 3..(y + row0 + 1) * iw * 3];
            let dst = &mut out[y * ow * 3..(y + 1) * ow * 3];
            for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
                let (xmin, n) = c.bounds[xx];
                let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
                let taps = &line[xmin * 3..(xmin + n) * 3];
                let (mut s0, mut s1, mut s2) = (half, half, half);
                for (p, &w) in taps.chunks_exact(3).zip(k) {
                    s0 += p[0] as i32 * w;
                    s1 += p[1] as i32 * w;
                    s2 += p[2] as i32 * w;
                }
                px[0] = clip8(s0);
                px[1] = clip8(s1);
                px[2] = clip8(s2);
            }
        }
        out
    }

    /// One vertical pass over rows of width `w`; `c.bounds` are relative to `row0`.
    fn vertical(src: &[u8], w: usize, row0: usize, c: &Coeffs, oh: usize) -> Vec<u8> {
        let half = 1i32 << (PRECISION_BITS - 1);
        let stride = w * 3;
        let mut out = vec![0u8; oh * stride];
        let mut acc = vec![0i32; stride];
        for yy in 0..oh {
            let (ymin, n) = c.bounds[yy];
            let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
            acc.fill(half);
            for (i, &wt) in k.iter().enumerate() {
                let r = ymin - row0 + i;
                for (a, &p) in acc.iter_mut().zip(&src[r * stride..(r + 1) * stride]) {
                    *a += p as i32 * wt;
                }
            }
            for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
        out
    }

    pub fn resize(img: &RgbImage, rect: (f64, f64, f64, f64), width: u32, height: u32) -> RgbImage {
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let (ow, oh) = (width as usize, height as usize);
        if ow == 0 || oh == 0 || iw == 0 || ih == 0 {
            return RgbImage::new(width, height);
        }
        let (x0, y0, x1, y1) = rect;
        let need_h = ow != iw || x0 != 0.0 || x1 != ow as f64;
        let need_v = oh != ih || y0 != 0.0 || y1 != oh as f64;
        let horiz = coeffs(iw, x0, x1, ow);
        let vert = coeffs(ih, y0, y1, oh);
        let src = img.as_raw();
        // Pillow 13 runs the vertical pass first when the height shrinks by more than twice
        // the width's reduction (in pixels); earlier versions always went horizontal first.
        // The two orders round differently. Square resizes (the inference chain's
        // 672 → 224) take the horizontal-first path in every version.
        let horizontal_first = !(ih > oh && (ih - oh) as i64 > (iw as i64 - ow as i64) * 2);
        let data = if horizontal_first {
            // The horizontal pass covers only the rows the vertical pass reads.
            let (first, last) = (
                vert.bounds[0].0,
                vert.bounds[oh - 1].0 + vert.bounds[oh - 1].1,
            );
            match (need_h, need_v) {
                (true, true) => vertical(
                    &horizontal(src, iw, first, last - first, &horiz, ow),
                    ow,
                    first,
                    &vert,
                    oh,
                ),
                (true, false) => horizontal(src, iw, 0, ih, &horiz, ow),
                (false, true) => vertical(src, iw, 0, &vert, oh),
                (false, false) => src.clone(),
            }
        } else {
            let tmp = if need_v {
                vertical(src, iw, 0, &vert, oh)
            } else {
                src.clone()
            };
            if need_h {
                horizontal(&tmp, iw, 0, oh, &horiz, ow)
            } else {
                tmp
            }
        };
        RgbImage::from_raw(width, height, data).expect("buffer size")
    }
}

/// A float image in CHW layout, what a model consumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Chw {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Chw {
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// torchvision `ToTensor()` followed by `Normalize(mean, std)`: HWC u8 → CHW f32.
pub fn to_tensor_normalized(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Chw {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    let mut data = vec![0f32; 3 * plane];
    // Per-channel lookup table: exactly (v/255 − mean)/std as torchvision computes it in f32.
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, entry) in table.iter_mut().enumerate() {
            *entry = (v as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    let (r, rest) = data.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = lut[0][px[0] as usize];
        g[i] = lut[1][px[1] as usize];
        b[i] = lut[2][px[2] as usize];
    }
    Chw {
        channels: 3,
        height: h,
        width: w,
        data,
    }
}

pub fn flip_horizontal(img: &RgbImage) -> RgbImage {
    image::imageops::flip_horizontal(img)
}

pub fn flip_vertical(img: &RgbImage) -> RgbImage {
    image::imageops::flip_vertical(img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn bordered(w: u32, h: u32, l: u32, r: u32, t: u32, b: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if x < l || x >= w - r || y < t || y >= h - b {
                Rgb([3, 5, 10])
            } else {
                Rgb([120, 120, 120])
            }
        })
    }

    #[test]
    fn cut_black_trims_with_original_right_quirk() {
        let img = bordered(400, 300, 20, 30, 10, 15);
        let b = cut_black_box(&img, &CutBlackParams::default());
        // Left: columns 0..20 black → x0 = 20. Right: last black column scanned is 370 →
        // exclusive end 369, dropping non-black column 369 as the original did.
        assert_eq!(
            b,
            CropBox {
                x0: 20,
                y0: 10,
                x1: 369,
                y1: 284
            }
        );
    }

    #[test]
    fn cut_black_keeps_small_results_and_black_images() {
        let img = bordered(300, 300, 60, 60, 0, 0); // crop would be 179 wide
        assert_eq!(
            cut_black_box(&img, &CutBlackParams::default()),
            CropBox::full(300, 300)
        );
        let black = RgbImage::new(500, 400);
        assert_eq!(
            cut_black_box(&black, &CutBlackParams::default()),
            CropBox::full(500, 400)
        );
        let one = RgbImage::new(1, 1);
        assert_eq!(
            cut_black_box(&one, &CutBlackParams::default()),
            CropBox::full(1, 1)
        );
    }

    #[test]
    fn center_crop_pads_and_rounds_like_torchvision() {
        // 5 − 2 = 3 → round(1.5) = 2 in Python.
        assert_eq!(center_crop_origin(5, 5, 2, 2), (2, 2));
        // 7 − 2 = 5 → round(2.5) = 2 (banker's rounding).
        assert_eq!(center_crop_origin(7, 7, 2, 2), (2, 2));
        // Smaller than the crop: pad (672 − 501) // 2 = 85 on the left/top.
        assert_eq!(center_crop_origin(501, 300, 672, 672), (-85, -186));
        let img = RgbImage::from_pixel(3, 1, Rgb([9, 9, 9]));
        let c = center_crop(&img, 5, 3);
        assert_eq!(c.get_pixel(0, 1), &Rgb([0, 0, 0]));
        assert_eq!(c.get_pixel(1, 1), &Rgb([9, 9, 9]));
        assert_eq!(c.get_pixel(3, 1), &Rgb([9, 9, 9]));
        assert_eq!(c.get_pixel(4, 1), &Rgb([0, 0, 0]));
        assert_eq!(c.get_pixel(2, 0), &Rgb([0, 0, 0]));
    }

    #[test]
    fn normalize_matches_formula() {
        let img = RgbImage::from_pixel(2, 1, Rgb([0, 128, 255]));
        let t = to_tensor_normalized(&img, IMAGENET_MEAN, IMAGENET_STD);
        assert_eq!((t.channels, t.height, t.width), (3, 1, 2));
        assert!((t.data[0] - (-0.485 / 0.229)).abs() < 1e-6);
        assert!((t.data[2] - ((128.0 / 255.0 - 0.456) / 0.224)).abs() < 1e-6);
        assert!((t.data[4] - ((1.0 - 0.406) / 0.225)).abs() < 1e-6);
    }

    #[test]
    fn decode_rejects_garbage_and_bombs() {
        assert!(matches!(
            decode_bytes(b"not an image"),
            Err(DecodeError::Image(_))
        ));
        // A PNG header claiming 100000×100000 pixels.
        let mut png = Vec::new();
        png.extend_from_slice(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        let err = decode_bytes(&png).unwrap_err();
        assert!(
            matches!(err, DecodeError::TooLarge { .. } | DecodeError::Image(_)),
            "{err}"
        );
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A JPEG with an EXIF APP1 segment carrying `orientation` (built by hand: SOI, APP1,
    /// then the rest of an ordinary JPEG).
    fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
        let mut plain = Vec::new();
        DynamicImage::ImageRgb8(img.clone())
            .write_to(
                &mut std::io::Cursor::new(&mut plain),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let mut tiff = b"II*\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one IFD entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = plain[..2].to_vec();
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&plain[2..]);
        out
    }

    #[test]
    fn decode_applies_exif_orientation() {
        // A wide image, left half white, right half black.
        let img = RgbImage::from_fn(64, 32, |x, _| {
            if x < 32 {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 0])
            }
        });
        let plain = decode_bytes(&jpeg_with_orientation(&img, 1)).unwrap();
        assert_eq!(plain.dimensions(), (64, 32));
        // Orientation 6: displayed rotated 90° clockwise, so it becomes tall with the white
        // half on top.
        let rotated = decode_bytes(&jpeg_with_orientation(&img, 6)).unwrap();
        assert_eq!(rotated.dimensions(), (32, 64));
        assert!(rotated.get_pixel(16, 8)[0] > 200, "top is white");
        assert!(rotated.get_pixel(16, 56)[0] < 50, "bottom is black");
    }

    #[test]
    fn decode_converts_grey_alpha_and_16bit() {
        let mut buf = Vec::new();
        let grey = image::GrayAlphaImage::from_pixel(3, 2, image::LumaA([77, 10]));
        DynamicImage::ImageLumaA8(grey)
            .write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        let rgb = decode_bytes(&buf).unwrap();
        assert_eq!(rgb.get_pixel(1, 1), &Rgb([77, 77, 77]));

        let mut buf = Vec::new();
        let g16 =
            image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(2, 2, image::Luma([65535u16]));
        DynamicImage::ImageLuma16(g16)
            .write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(
            decode_bytes(&buf).unwrap().get_pixel(0, 0),
            &Rgb([255, 255, 255])
        );
    }
}
