//! `birads serve` over real sockets: the API's answers equal `birads predict`, every limit
//! answers with its documented status, the queue sheds load with 503 + Retry-After, and the
//! page needs nothing from outside.

use std::path::{Path, PathBuf};
use std::process::Command;

mod corpus;
mod support;

use support::{fixtures, start_server as start};

fn image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let files = support::synth_images(dir, 9, 200, 300);
    let bytes = std::fs::read(&files[0]).unwrap();
    (files[0].clone(), bytes)
}

/// POST raw bytes; any status comes back as (status, headers' Retry-After, body).
fn post(url: &str, body: &[u8], token: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    let mut req = ureq::post(url).timeout(std::time::Duration::from_secs(60));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    let status = resp.status();
    let retry = resp.header("Retry-After").map(str::to_string);
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut out).unwrap();
    (status, retry, out)
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

/// A multipart body with one file field.
fn multipart(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "birads-test-boundary-7e1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn predictions_equal_the_command_line_and_carry_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = image(dir.path());
    let s = start(&[]);
    let (status, _, body) = post(&format!("{}/v1/predict", s.base), &bytes, None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    // The same image through `birads predict`.
    let out = dir.path().join("pred");
    let o = Command::new(env!("CARGO_BIN_EXE_birads"))
        .args(["predict", "--probabilities", "--input"])
        .arg(path.parent().unwrap())
        .arg("--output")
        .arg(&out)
        .arg("--cla-weights")
        .arg(fixtures().join("myconvnext_small.pth"))
        .arg("--fea-weights")
        .arg(fixtures().join("mydensenet_small.pth"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let name = path.file_name().unwrap().to_str().unwrap();
    let row = |f: &str| -> Vec<f64> {
        let mut r = csv::Reader::from_path(out.join(f)).unwrap();
        r.records()
            .map(|x| x.unwrap())
            .find(|x| &x[0] == name)
            .unwrap()
            .iter()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect()
    };
    let cla = row("cla_prob.csv");
    let classes = ["2", "3", "4A", "4B", "4C", "5"];
    let mut sum = 0.0;
    for (c, expected) in classes.iter().zip(&cla) {
        let p = v["birads"]["probabilities"][c].as_f64().unwrap();
        assert!((p - expected).abs() < 2e-6, "{c}: {p} vs {expected}");
        sum += p;
    }
    assert!((sum - 1.0).abs() < 1e-4);
    let best = classes.iter().zip(&cla).fold((0, f64::MIN), |b, (c, p)| {
        if *p > b.1 {
            (classes.iter().position(|x| x == c).unwrap(), *p)
        } else {
            b
        }
    });
    assert_eq!(v["birads"]["label"], classes[best.0]);
    let fea = row("fea_prob.csv");
    for (k, f) in ["boundary", "calcification", "direction", "shape"]
        .iter()
        .enumerate()
    {
        let p = v["features"][f]["probability"].as_f64().unwrap();
        assert!((p - fea[k]).abs() < 2e-6, "{f}: {p} vs {}", fea[k]);
        assert_eq!(
            v["features"][f]["label"].as_u64().unwrap(),
            (p > 0.5) as u64
        );
    }
    let (w, h) = (
        v["image"]["width"].as_u64().unwrap(),
        v["image"]["height"].as_u64().unwrap(),
    );
    let c = &v["crop_box"];
    assert!(
        c["x0"].as_u64().unwrap() < c["x1"].as_u64().unwrap() && c["x1"].as_u64().unwrap() <= w
    );
    assert!(
        c["y0"].as_u64().unwrap() < c["y1"].as_u64().unwrap() && c["y1"].as_u64().unwrap() <= h
    );
    for t in ["decode", "preprocess", "queue", "inference", "total"] {
        assert!(v["timings_ms"][t].as_f64().unwrap() >= 0.0, "{t}");
    }

    // Multipart gives the same answer and keeps the client's file name.
    let (ct, mp) = multipart("scan 1.jpg", &bytes);
    let r = ureq::post(&format!("{}/v1/predict", s.base))
        .set("Content-Type", &ct)
        .send_bytes(&mp)
        .unwrap();
    let m = json(r.into_string().unwrap().as_bytes());
    assert_eq!(m["name"], "scan 1.jpg");
    assert_eq!(m["birads"], v["birads"]);

    // Grad-CAM comes back as a PNG.
    let (status, _, png) = post(&format!("{}/v1/explain", s.base), &bytes, None);
    assert_eq!(status, 200);
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let (status, _, body) = post(&format!("{}/v1/explain?target=7", s.base), &bytes, None);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn every_limit_answers_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = image(dir.path());
    let s = start(&["--max-body-mib", "1", "--max-megapixels", "1"]);
    let url = format!("{}/v1/predict", s.base);
    // Not an image — including a server path, which is never opened.
    for body in [
        &b"/etc/passwd"[..],
        b"GIF89a not really",
        b"\xff\xd8\xff\xe0 truncated",
    ] {
        let (status, _, b) = post(&url, body, None);
        assert_eq!(status, 422, "{}", String::from_utf8_lossy(&b));
        assert!(json(&b)["error"]
            .as_str()
            .unwrap()
            .contains("cannot read the image"));
    }
    let (status, _, _) = post(&url, b"", None);
    assert_eq!(status, 400);
    // Decompression bomb: refused from the header.
    let bomb = corpus::png_header_only(50_000, 50_000);
    let (status, _, b) = post(&url, &bomb, None);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&b));
    assert!(json(&b)["error"].as_str().unwrap().contains("50000×50000"));
    // An image above --max-megapixels 1 (1200×1000).
    let big = image::RgbImage::from_pixel(1200, 1000, image::Rgb([80, 80, 80]));
    let mut png = Vec::new();
    big.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let (status, _, _) = post(&url, &png, None);
    assert_eq!(status, 413);
    // A body above --max-body-mib 1: the server answers 413 while the client is still
    // sending (raw socket: the writer may then see a broken pipe, the reader gets the answer).
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let n = 2 * 1024 * 1024;
        write!(
            c,
            "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n"
        )
        .unwrap();
        let mut w = c.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&vec![0u8; n]);
        });
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        let _ = writer.join();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    // The good image still works after all that.
    let (status, _, _) = post(&url, &bytes, None);
    assert_eq!(status, 200);
    let metrics = ureq::get(&format!("{}/metrics", s.base))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for want in [
        "birads_requests_total{endpoint=\"/v1/predict\",status=\"422\"} 3",
        "birads_requests_total{endpoint=\"/v1/predict\",status=\"413\"} 3",
        "birads_requests_total{endpoint=\"/v1/predict\",status=\"200\"} 1",
        "birads_errors_total{endpoint=\"/v1/predict\"} 7",
        "birads_queue_depth 0",
        "birads_request_duration_seconds_count{endpoint=\"/v1/predict\"} 8",
    ] {
        assert!(metrics.contains(want), "missing {want}\n{metrics}");
    }
}

#[test]
fn a_token_guards_the_api_but_not_health() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = image(dir.path());
    let s = start(&["--token", "s3cret"]);
    let url = format!("{}/v1/predict", s.base);
    assert_eq!(post(&url, &bytes, None).0, 401);
    assert_eq!(post(&url, &bytes, Some("wrong!")).0, 401);
    assert_eq!(post(&url, &bytes, Some("s3cret")).0, 200);
    assert_eq!(post(&format!("{}/v1/explain", s.base), &bytes, None).0, 401);
    let h = json(
        ureq::get(&format!("{}/health", s.base))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
            .as_bytes(),
    );
    assert_eq!(h["status"], "ok");
    assert_eq!(h["token_required"], true);
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_nothing_else_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = image(dir.path());
    let s = start(&["--queue", "1", "--max-batch", "1"]);
    let url = format!("{}/v1/predict", s.base);
    let results: Vec<(u16, Option<String>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..24)
            .map(|_| {
                sc.spawn(|| {
                    let (st, retry, _) = post(&url, &bytes, None);
                    (st, retry)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(
        ok + busy.len(),
        results.len(),
        "only 200 or 503: {results:?}"
    );
    assert!(ok >= 1 && !busy.is_empty(), "{results:?}");
    assert!(
        busy.iter().all(|r| r.1.as_deref() == Some("1")),
        "{results:?}"
    );
}

#[test]
fn the_page_is_self_contained() {
    let s = start(&[]);
    let page = ureq::get(&format!("{}/", s.base))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(page.contains("<html") && page.contains("/v1/predict") && page.contains("/v1/explain"));
    // Offline: no script, style, font or image from elsewhere.
    for bad in ["http://", "https://", "//cdn", "@import"] {
        assert!(!page.contains(bad), "page references {bad}");
    }
}

#[test]
fn a_stalled_upload_times_out_with_408() {
    use std::io::{Read, Write};
    let s = start(&["--timeout-s", "1"]);
    let addr = s.base.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // Promise 1000 bytes, send 10, then stall.
    write!(
        c,
        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"
    )
    .unwrap();
    let t = std::time::Instant::now();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // The server is fine afterwards.
    let h = ureq::get(&format!("{}/health", s.base)).call().unwrap();
    assert_eq!(h.status(), 200);
}

/// A DICOM upload: the preview is the server's decoded frame, the answer speaks the lexicon
/// and carries the discordance rules' flags, and the one-page report has every part.
#[test]
fn dicom_preview_lexicon_and_report() {
    use birads_infer::lexicon::{describe_features, discordance};
    let dir = tempfile::tempdir().unwrap();
    let files = support::synth_images(dir.path(), 11, 200, 260);
    let img = birads_data::image_ops::decode_path(&files[0]).unwrap();
    let dcm = corpus::dicom::rgb(&img);
    let s = start(&[]);

    // Preview: PNG of exactly the decoded frame.
    let (status, _, png) = post(&format!("{}/v1/preview", s.base), &dcm, None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    let shown = image::load_from_memory(&png).unwrap().to_rgb8();
    let frame = birads_data::dicom::decode_dicom(&dcm, None).unwrap();
    assert_eq!(shown, frame);
    assert_eq!(shown, img);
    let (status, _, _) = post(&format!("{}/v1/preview", s.base), b"not an image", None);
    assert_eq!(status, 422);

    // The lexicon in the answer.
    let (status, _, body) = post(&format!("{}/v1/predict", s.base), &dcm, None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    let label = v["birads"]["label"].as_str().unwrap();
    let meaning = &v["birads"]["meaning"];
    assert_eq!(meaning["category"], label);
    assert!(!meaning["management"].as_str().unwrap().is_empty());
    let words = [
        ("boundary", "margin", "circumscribed", "not circumscribed"),
        ("calcification", "calcifications", "absent", "present"),
        ("direction", "orientation", "parallel", "not parallel"),
        ("shape", "shape", "regular (oval or round)", "irregular"),
    ];
    let mut q = [0f32; 4];
    for (k, (f, lexicon, no, yes)) in words.iter().enumerate() {
        let x = &v["features"][f];
        assert_eq!(x["descriptor"], *lexicon);
        let expected = if x["label"] == 1 { yes } else { no };
        assert_eq!(x["finding"], *expected, "{f}");
        assert_eq!(v["descriptors"][k]["finding"], *expected);
        q[k] = x["probability"].as_f64().unwrap() as f32;
    }
    assert!(v["fused"].is_null(), "no fusion model loaded");
    let expected = discordance(Some(label), None, Some(&describe_features(&q)));
    assert_eq!(v["flags"], serde_json::to_value(&expected).unwrap());

    // The printable report, with the heatmap of the chosen feature.
    let (ct, mp) = multipart("scan.dcm", &dcm);
    let r = ureq::post(&format!("{}/v1/report?target=shape", s.base))
        .set("Content-Type", &ct)
        .send_bytes(&mp)
        .unwrap();
    assert!(r.content_type().starts_with("text/html"));
    let html = r.into_string().unwrap();
    for part in [
        "<h1>scan.dcm</h1>",
        &format!("BI-RADS {label}"),
        meaning["management"].as_str().unwrap(),
        "Descriptors (BI-RADS ultrasound lexicon)",
        "Grad-CAM: shape",
        "Discordance",
        "mydensenet_small.pth",
        "not a substitute for a radiologist",
        "@page { size: A4",
    ] {
        assert!(html.contains(part), "report lacks {part:?}");
    }
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        2,
        "image + heatmap"
    );
    let r = ureq::post(&format!("{}/v1/report?target=nonsense", s.base)).send_bytes(&dcm);
    assert!(matches!(r, Err(ureq::Error::Status(400, _))));
}
