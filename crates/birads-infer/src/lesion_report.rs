//! The printable one-page report of one image (self-contained HTML, A4 print stylesheet) and
//! the index page of a batch of them. `birads predict --report` writes them; `birads serve`
//! answers `POST /v1/report` with the same page.

use std::fmt::Write as _;

use base64::Engine as _;
use birads_data::image_ops::CropBox;
use image::{Rgb, RgbImage};

use crate::assessment::{Assessment, Grade};
use crate::report::{esc, png};

/// The notice every report carries.
pub const RESEARCH_NOTICE: &str = "Research software. These are model estimates, not a \
diagnosis; they are not a substitute for a radiologist's reading and must not guide the care \
of a patient. The category descriptions state what a BI-RADS category means in the ACR atlas, \
not a recommendation for this patient.";

/// What one report shows.
pub struct LesionReport<'a> {
    /// The image's name (file name or upload name).
    pub name: &'a str,
    /// The decoded image as received.
    pub image: &'a RgbImage,
    /// CutBlack's crop box in the image, drawn in green.
    pub crop: Option<CropBox>,
    /// Grad-CAM overlays with their captions.
    pub heatmaps: Vec<(String, RgbImage)>,
    pub assessment: &'a Assessment,
    /// (role, where the model came from), e.g. ("BI-RADS", "builtin: birads-busbra …").
    pub models: Vec<(String, String)>,
}

fn data_url(img: &RgbImage) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png(img))
    )
}

/// The image with the crop box drawn, scaled so that its longer side is between 320 pixels
/// and `side` (small images are enlarged for print).
fn with_crop(img: &RgbImage, crop: Option<CropBox>, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let longer = w.max(h) as f32;
    let scale = (side as f32 / longer)
        .min(1.0)
        .max(320f32.min(side as f32) / longer);
    let (sw, sh) = (
        ((w as f32 * scale).round() as u32).max(1),
        ((h as f32 * scale).round() as u32).max(1),
    );
    let mut out = if scale != 1.0 {
        image::imageops::resize(img, sw, sh, image::imageops::FilterType::Triangle)
    } else {
        img.clone()
    };
    if let Some(c) = crop {
        let b = [c.x0, c.y0, c.x1, c.y1].map(|v| v as f32 * scale);
        birads_data::draw::rect(&mut out, b, Rgb([0, 224, 0]), 2);
    }
    out
}

const STYLE: &str = "
body { font: 12px/1.4 system-ui, sans-serif; color: #111; margin: 16px; }
h1 { font-size: 17px; margin: 0 0 2px; word-break: break-all; }
h2 { font-size: 13px; margin: 10px 0 4px; border-bottom: 1px solid #bbb; }
.images { display: flex; gap: 10px; flex-wrap: wrap; }
.images figure { margin: 0; }
.images img { max-width: 320px; max-height: 250px; border: 1px solid #999; }
figcaption { font-size: 10px; color: #444; }
table { border-collapse: collapse; }
td, th { padding: 1px 8px 1px 0; text-align: left; vertical-align: top; }
.category { font-size: 16px; font-weight: 700; }
.flag { color: #8a1c00; font-weight: 600; }
.muted { color: #555; font-size: 10px; }
.notice { margin-top: 10px; padding: 6px; border: 1px solid #999; font-size: 10px; }
@page { size: A4; margin: 12mm; }
@media print {
  body { margin: 0; }
  .noprint { display: none; }
  .images img { max-width: 84mm; max-height: 70mm; }
  h2, table, .notice { break-inside: avoid; }
}
";

fn grade_block(html: &mut String, title: &str, g: &Grade, testid: &str) {
    let _ = write!(
        html,
        "<h2>{title}</h2><div class=\"category\" data-testid=\"{testid}\">BI-RADS {} \
         <span class=\"muted\">(p {:.3})</span></div>",
        esc(&g.label),
        g.probability
    );
    if let Some(m) = &g.meaning {
        let _ = write!(
            html,
            "<div>{}: likelihood of malignancy {}; the atlas's management for this category: {}.</div>",
            esc(m.assessment),
            esc(m.likelihood),
            esc(m.management)
        );
    }
    let probs: Vec<String> = g
        .probabilities
        .iter()
        .map(|(c, p)| format!("{} {:.3}", esc(c), p))
        .collect();
    let _ = write!(html, "<div class=\"muted\">{}</div>", probs.join(" · "));
}

fn descriptors_block(html: &mut String, a: &Assessment) {
    html.push_str("<h2>Descriptors (BI-RADS ultrasound lexicon)</h2>");
    match &a.descriptors {
        Some(d) => {
            html.push_str(
                "<table data-testid=\"descriptors\"><tr><th>descriptor</th><th>finding</th>\
                 <th>P(suspicious finding)</th></tr>",
            );
            for r in d {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}{}</td><td>{:.3}</td></tr>",
                    r.lexicon,
                    esc(r.finding),
                    if r.suspicious { " (suspicious)" } else { "" },
                    r.probability
                );
            }
            html.push_str("</table>");
        }
        None => html.push_str(
            "<div class=\"muted\">No feature model was loaded: descriptors are not assessed.</div>",
        ),
    }
}

fn flags_block(html: &mut String, a: &Assessment) {
    html.push_str("<h2>Discordance</h2>");
    if a.flags.is_empty() {
        html.push_str("<div data-testid=\"flags\">No discordance between category and descriptors was found by the rules.</div>");
        return;
    }
    html.push_str("<ul data-testid=\"flags\">");
    for f in &a.flags {
        let _ = write!(
            html,
            "<li class=\"flag\">{} <span class=\"muted\">({}, {} category)</span></li>",
            esc(&f.reason),
            f.rule,
            f.about
        );
    }
    html.push_str("</ul>");
}

/// The one-page report of one image.
pub fn lesion_page(r: &LesionReport) -> String {
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>birads report: {}</title>\
         <style>{STYLE}</style></head><body><button class=\"noprint\" onclick=\"print()\">Print</button>\
         <h1>{}</h1><div class=\"muted\">{}×{} pixels · birads {}</div>",
        esc(r.name),
        esc(r.name),
        r.image.width(),
        r.image.height(),
        env!("CARGO_PKG_VERSION")
    );
    html.push_str("<div class=\"images\">");
    let _ = write!(
        html,
        "<figure><img data-testid=\"report-image\" alt=\"the image\" src=\"{}\">\
         <figcaption>image, green: the region the models see (CutBlack crop)</figcaption></figure>",
        data_url(&with_crop(r.image, r.crop, 640))
    );
    for (caption, img) in &r.heatmaps {
        let _ = write!(
            html,
            "<figure><img data-testid=\"report-heatmap\" alt=\"{0}\" src=\"{1}\"><figcaption>{0}</figcaption></figure>",
            esc(caption),
            data_url(img)
        );
    }
    html.push_str("</div>");
    let a = r.assessment;
    match &a.birads {
        Some(g) => grade_block(&mut html, "Category (image model)", g, "report-category"),
        None => html
            .push_str("<h2>Category</h2><div class=\"muted\">No BI-RADS model was loaded.</div>"),
    }
    if let Some(g) = &a.fused {
        grade_block(
            &mut html,
            "Category (fusion of image and descriptors)",
            g,
            "report-fused",
        );
    }
    descriptors_block(&mut html, a);
    flags_block(&mut html, a);
    html.push_str("<h2>Models</h2><table class=\"muted\">");
    for (role, source) in &r.models {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(role),
            esc(source)
        );
    }
    let _ = write!(
        html,
        "</table><div class=\"notice\" data-testid=\"notice\">{RESEARCH_NOTICE}</div></body></html>"
    );
    html
}

/// One line of the index page.
pub struct IndexRow {
    pub name: String,
    /// The report's file name (relative link), when it was written.
    pub link: Option<String>,
    pub category: Option<String>,
    pub fused: Option<String>,
    pub descriptors: Option<String>,
    pub flags: Vec<String>,
    pub error: Option<String>,
}

/// The index of a batch of reports.
pub fn index_page(title: &str, rows: &[IndexRow]) -> String {
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title>\
         <style>{STYLE}</style></head><body><h1>{0}</h1><div class=\"muted\">{1} images · birads {2}</div>\
         <table data-testid=\"index\"><tr><th>image</th><th>category</th><th>fused</th><th>descriptors</th><th>flags</th></tr>",
        esc(title),
        rows.len(),
        env!("CARGO_PKG_VERSION")
    );
    let cell = |v: &Option<String>| v.as_deref().map(esc).unwrap_or_else(|| "–".into());
    for r in rows {
        let name = match &r.link {
            Some(l) => format!("<a href=\"{}\">{}</a>", esc(l), esc(&r.name)),
            None => esc(&r.name),
        };
        if let Some(e) = &r.error {
            let _ = write!(
                html,
                "<tr><td>{name}</td><td colspan=\"4\" class=\"flag\">error: {}</td></tr>",
                esc(e)
            );
            continue;
        }
        let _ =
            write!(
            html,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"flag\">{}</td></tr>",
            cell(&r.category),
            cell(&r.fused),
            cell(&r.descriptors),
            r.flags.iter().map(|f| esc(f)).collect::<Vec<_>>().join("<br>")
        );
    }
    let _ = write!(
        html,
        "</table><div class=\"notice\">{RESEARCH_NOTICE}</div></body></html>"
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assessment::assess;

    #[test]
    fn the_page_shows_every_part_and_escapes_names() {
        let classes: Vec<String> = ["2", "3", "4", "5"].iter().map(|s| s.to_string()).collect();
        let a = assess(
            &classes,
            Some(&[0.7, 0.1, 0.1, 0.1]),
            Some(&[0.9, 0.9, 0.1, 0.1]),
            None,
        );
        let img = RgbImage::from_pixel(800, 400, Rgb([90, 90, 90]));
        let heat = RgbImage::from_pixel(64, 64, Rgb([200, 0, 0]));
        let page = lesion_page(&LesionReport {
            name: "<b>x</b>.png",
            image: &img,
            crop: Some(CropBox {
                x0: 10,
                y0: 10,
                x1: 700,
                y1: 390,
            }),
            heatmaps: vec![("Grad-CAM: BI-RADS 2".into(), heat)],
            assessment: &a,
            models: vec![("BI-RADS".into(), "builtin".into())],
        });
        assert!(page.contains("&lt;b&gt;x&lt;/b&gt;.png") && !page.contains("<b>x</b>"));
        assert!(page.contains("BI-RADS 2"));
        assert!(page.contains("Benign: likelihood of malignancy essentially 0%"));
        assert!(page.contains("margin</td><td>not circumscribed (suspicious)"));
        assert!(page.contains("calcifications</td><td>present (suspicious)"));
        assert!(page.contains("low-category-suspicious-descriptors"));
        assert!(page.contains(RESEARCH_NOTICE));
        assert!(page.contains("@page { size: A4"));
        assert_eq!(page.matches("data:image/png;base64,").count(), 2);
        // Self-contained: nothing fetched from elsewhere.
        assert!(!page.contains("http://") && !page.contains("https://"));
        // The image is scaled to at most 640 px and carries the green box.
        let shown = with_crop(
            &img,
            Some(CropBox {
                x0: 10,
                y0: 10,
                x1: 700,
                y1: 390,
            }),
            640,
        );
        assert_eq!(shown.dimensions(), (640, 320));
        assert_eq!(shown.get_pixel(8, 100), &Rgb([0, 224, 0]));
        assert_eq!(shown.get_pixel(100, 100), &Rgb([90, 90, 90]));
        let small = with_crop(&RgbImage::new(160, 100), None, 640);
        assert_eq!(
            small.dimensions(),
            (320, 200),
            "small images are enlarged for print"
        );
    }
}
