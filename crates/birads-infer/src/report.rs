//! The evaluation report: `eval.json` for programs, and one self-contained `report.html`
//! (PNG plots embedded as data URIs, no scripts, no network) for people.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Once;

use base64::Engine as _;
use birads_data::atomic::write_atomic;
use plotters::prelude::*;

use crate::eval::{ClsEval, Evaluation, FeaEval};
use crate::metrics::ReliabilityBin;

pub const FONT: &str = "sans-serif";
static FONT_ONCE: Once = Once::new();

/// Plots need a font; register the embedded DejaVu Sans once per process.
pub fn register_font() {
    FONT_ONCE.call_once(|| {
        // The bytes come from the `dejavu` crate; a failure here would be a broken build.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A rendered plot: its file name in the report folder and its PNG bytes.
pub struct Plot {
    pub name: String,
    pub title: String,
    pub png: Vec<u8>,
}

/// One ROC curve: name, points, AUC.
pub type RocSeries<'a> = (String, &'a [(f64, f64)], Option<f64>);

/// What a drawing closure returns: plotters' errors, boxed.
pub type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A `w`×`h` white canvas with the font registered, drawn on by `draw`, as PNG bytes.
pub fn render(
    w: u32,
    h: u32,
    draw: impl FnOnce(DrawingArea<BitMapBackend, plotters::coord::Shift>) -> DrawResult,
) -> Result<Vec<u8>, String> {
    register_font();
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(root.clone()).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or("plot buffer size")?;
    Ok(png(&img))
}

/// PNG bytes of an image.
pub fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encoding a PNG into memory cannot fail");
    out
}

/// Row-normalised confusion matrix (recall on the diagonal) with counts in each cell; true
/// classes top to bottom as scikit-learn displays them.
pub fn confusion_plot(
    title: &str,
    labels: &[String],
    counts: &[Vec<u64>],
) -> Result<Vec<u8>, String> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let k = labels.len();
    let name = |v: &SegmentValue<usize>, flip: bool| match v {
        SegmentValue::CenterOf(i) if *i < k => labels[if flip { k - 1 - *i } else { *i }].clone(),
        _ => String::new(),
    };
    render(560, 520, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            // A discrete range is inclusive: 0..k-1 gives k segments.
            .build_cartesian_2d(
                (0..k.saturating_sub(1)).into_segmented(),
                (0..k.saturating_sub(1)).into_segmented(),
            )?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(k)
            .y_labels(k)
            .x_label_formatter(&|v| name(v, false))
            .y_label_formatter(&|v| name(v, true))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        let centre = Pos::new(HPos::Center, VPos::Center);
        for (t, row) in counts.iter().enumerate() {
            let n: u64 = row.iter().sum();
            let y = k - 1 - t;
            for (p, &c) in row.iter().enumerate() {
                let frac = if n > 0 { c as f64 / n as f64 } else { 0.0 };
                let shade = (255.0 * (1.0 - 0.85 * frac)) as u8;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                    ],
                    RGBColor(shade, shade, 255).filled(),
                )))?;
                let colour = if frac > 0.55 { WHITE } else { BLACK };
                chart.draw_series(std::iter::once(Text::new(
                    format!("{frac:.2} ({c})"),
                    (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                    (FONT, 13).into_font().color(&colour).pos(centre),
                )))?;
            }
        }
        Ok(())
    })
}

/// Curves on the unit square with the diagonal (chance for ROC, perfect calibration for
/// reliability), one colour and legend entry per curve.
fn unit_square_plot(
    title: &str,
    axes: (&str, &str),
    legend: SeriesLabelPosition,
    curves: &[(String, Vec<(f64, f64)>)],
    markers: bool,
) -> Result<Vec<u8>, String> {
    render(560, 520, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()?;
        chart.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.3).stroke_width(1),
        ))?;
        for (i, (label, points)) in curves.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            if markers {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(legend)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

/// ROC curves, one per series, with the chance diagonal.
pub fn roc_plot(title: &str, series: &[RocSeries]) -> Result<Vec<u8>, String> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, points, auc)| {
            let label = match auc {
                Some(a) => format!("{name} (AUC {a:.3})"),
                None => format!("{name} (AUC undefined)"),
            };
            (label, points.to_vec())
        })
        .collect();
    unit_square_plot(
        title,
        ("false-positive rate", "true-positive rate"),
        SeriesLabelPosition::LowerRight,
        &curves,
        false,
    )
}

/// Reliability diagram: observed frequency against mean confidence per non-empty bin.
pub fn reliability_plot(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, &[ReliabilityBin], Option<f64>)],
) -> Result<Vec<u8>, String> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, bins, ece)| {
            let label = match ece {
                Some(e) => format!("{name} (ECE {e:.3})"),
                None => name.clone(),
            };
            let points = bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.confidence, b.observed))
                .collect();
            (label, points)
        })
        .collect();
    unit_square_plot(
        title,
        (x_desc, y_desc),
        SeriesLabelPosition::UpperLeft,
        &curves,
        true,
    )
}

/// Every plot the evaluation supports.
pub fn plots(ev: &Evaluation) -> Result<Vec<Plot>, String> {
    let mut out = Vec::new();
    if let Some(c) = &ev.classification {
        out.push(Plot {
            name: "cls_confusion.png".into(),
            title: "BI-RADS confusion matrix (rows normalised)".into(),
            png: confusion_plot(
                "BI-RADS: confusion (row-normalised)",
                &c.classes,
                &c.confusion,
            )?,
        });
        if let Some(auc) = &c.auc_per_class {
            let series: Vec<RocSeries> = c
                .classes
                .iter()
                .zip(&c.roc)
                .zip(auc)
                .filter(|(_, a)| a.is_some())
                .map(|((name, r), a)| (format!("BI-RADS {name}"), r.as_slice(), *a))
                .collect();
            out.push(Plot {
                name: "cls_roc.png".into(),
                title: "BI-RADS one-vs-rest ROC curves".into(),
                png: roc_plot("BI-RADS: one-vs-rest ROC", &series)?,
            });
        }
        if let Some(bins) = &c.reliability {
            out.push(Plot {
                name: "cls_reliability.png".into(),
                title: "BI-RADS reliability diagram (top-label)".into(),
                png: reliability_plot(
                    "BI-RADS: reliability",
                    "confidence (highest probability)",
                    "accuracy",
                    &[("top label".into(), bins.as_slice(), c.ece)],
                )?,
            });
        }
    }
    if let Some(f) = &ev.features {
        for feat in &f.features {
            out.push(Plot {
                name: format!("fea_{}_confusion.png", feat.name),
                title: format!("{} confusion matrix", feat.name),
                png: confusion_plot(
                    &format!("{}: confusion", feat.name),
                    &["0".to_string(), "1".to_string()],
                    &feat.confusion,
                )?,
            });
        }
        if f.features.iter().all(|x| x.reliability.is_some()) {
            let roc: Vec<RocSeries> = f
                .features
                .iter()
                .filter(|x| x.auc.is_some())
                .map(|x| (x.name.clone(), x.roc.as_slice(), x.auc))
                .collect();
            out.push(Plot {
                name: "fea_roc.png".into(),
                title: "Feature ROC curves".into(),
                png: roc_plot("Features: ROC", &roc)?,
            });
            let rel: Vec<(String, &[ReliabilityBin], Option<f64>)> = f
                .features
                .iter()
                .filter_map(|x| Some((x.name.clone(), x.reliability.as_deref()?, x.ece)))
                .collect();
            out.push(Plot {
                name: "fea_reliability.png".into(),
                title: "Feature reliability diagram".into(),
                png: reliability_plot(
                    "Features: reliability",
                    "predicted probability of the finding",
                    "observed frequency",
                    &rel,
                )?,
            });
        }
    }
    Ok(out)
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "–".into()
    }
}

pub(crate) fn fmt_opt(v: Option<f64>) -> String {
    v.map(fmt).unwrap_or_else(|| "–".into())
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cls_section(html: &mut String, c: &ClsEval) {
    let _ = write!(
        html,
        "<h2>BI-RADS grading</h2><p>{} images · accuracy <b>{}</b> · macro-F1 <b>{}</b> · \
         quadratic weighted κ <b>{}</b> · macro one-vs-rest AUC <b>{}</b> · ECE <b>{}</b></p>",
        c.images,
        fmt(c.accuracy),
        fmt(c.macro_f1),
        fmt(c.quadratic_kappa),
        fmt_opt(c.auc_macro),
        fmt_opt(c.ece)
    );
    html.push_str(
        "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>AUC</th><th>support</th></tr>",
    );
    for (i, (name, s)) in c.classes.iter().zip(&c.per_class).enumerate() {
        let auc = c.auc_per_class.as_ref().and_then(|a| a[i]);
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            fmt(s.precision),
            fmt(s.recall),
            fmt(s.f1),
            fmt_opt(auc),
            s.support
        );
    }
    html.push_str("</table><h3>Confusion matrix (counts; rows true, columns predicted)</h3><table><tr><th></th>");
    for n in &c.classes {
        let _ = write!(html, "<th>{}</th>", esc(n));
    }
    html.push_str("</tr>");
    for (name, row) in c.classes.iter().zip(&c.confusion) {
        let _ = write!(html, "<tr><th>{}</th>", esc(name));
        for v in row {
            let _ = write!(html, "<td>{v}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

fn fea_section(html: &mut String, f: &FeaEval) {
    let _ = write!(
        html,
        "<h2>Lesion features</h2><p>mean accuracy <b>{}</b> · mean F1 <b>{}</b></p>",
        fmt(f.mean_accuracy),
        fmt(f.mean_f1)
    );
    html.push_str(
        "<table><tr><th>feature</th><th>images</th><th>positives</th><th>accuracy</th><th>precision</th><th>recall</th><th>F1</th><th>AUC</th><th>ECE</th></tr>",
    );
    for x in &f.features {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&x.name),
            x.images,
            x.positives,
            fmt(x.accuracy),
            fmt(x.precision),
            fmt(x.recall),
            fmt(x.f1),
            fmt_opt(x.auc),
            fmt_opt(x.ece)
        );
    }
    html.push_str("</table>");
}

/// The plots as embedded PNG figures under a "Plots" heading.
pub(crate) fn plots_section(h: &mut String, plots: &[Plot]) {
    h.push_str("<h2>Plots</h2><div class=\"plots\">");
    for p in plots {
        let _ = write!(
            h,
            "<figure style=\"display:inline-block\"><img alt=\"{}\" src=\"data:image/png;base64,{}\"><figcaption>{}</figcaption></figure>",
            esc(&p.title),
            base64::engine::general_purpose::STANDARD.encode(&p.png),
            esc(&p.title)
        );
    }
    h.push_str("</div>");
}

/// The whole report as one HTML document.
pub fn html(ev: &Evaluation, plots: &[Plot], sources: &str) -> String {
    let mut h = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>birads evaluation</title>\
         <style>body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
         th{background:#f3f3f7}.score{font-size:1.3em}.plots img{max-width:540px;margin:.3em;border:1px solid #ddd}\
         .warn{color:#a40}</style></head><body><h1>birads evaluation</h1>",
    );
    let _ = write!(h, "<p>{}</p>", esc(sources));
    let c = &ev.competition;
    let _ = write!(
        h,
        "<p class=\"score\">Competition score: overall <b>{}</b> (classification {} = 0.6·accuracy + 0.4·macro-F1; \
         features {} = 0.6·mean accuracy + 0.4·mean F1)</p>",
        fmt_opt(c.overall),
        fmt_opt(c.classification),
        fmt_opt(c.features)
    );
    if !ev.missing_predictions.is_empty() {
        let _ = write!(
            h,
            "<p class=\"warn\">{} labelled images have no prediction and are not in the figures: {}</p>",
            ev.missing_predictions.len(),
            esc(&ev.missing_predictions.join(", "))
        );
    }
    if let Some(cls) = &ev.classification {
        cls_section(&mut h, cls);
    }
    if let Some(f) = &ev.features {
        fea_section(&mut h, f);
    }
    plots_section(&mut h, plots);
    if !ev.problems.is_empty() {
        let _ = write!(h, "<h2>Problems ({})</h2><ul>", ev.problems.len());
        for p in &ev.problems {
            let _ = write!(h, "<li>{}</li>", esc(&p.to_string()));
        }
        h.push_str("</ul>");
    }
    h.push_str("</body></html>\n");
    h
}

/// Write `eval.json`, `report.html` and the plots as PNG files into `dir`, atomically each.
pub fn write_report(ev: &Evaluation, dir: &Path, sources: &str) -> std::io::Result<Vec<PathBuf>> {
    let plots = plots(ev).map_err(std::io::Error::other)?;
    let json = serde_json::to_vec_pretty(ev).map_err(std::io::Error::other)?;
    write_files(
        dir,
        ("eval.json", &json),
        &html(ev, &plots, sources),
        &plots,
    )
}

/// Write a report's JSON, its `report.html` and its plots into `dir` (created if missing),
/// each file atomically; returns the paths written.
pub(crate) fn write_files(
    dir: &Path,
    (json_name, json): (&str, &[u8]),
    html: &str,
    plots: &[Plot],
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = vec![dir.join(json_name), dir.join("report.html")];
    write_atomic(&written[0], json)?;
    write_atomic(&written[1], html.as_bytes())?;
    for plot in plots {
        let p = dir.join(&plot.name);
        write_atomic(&p, &plot.png)?;
        written.push(p);
    }
    Ok(written)
}
