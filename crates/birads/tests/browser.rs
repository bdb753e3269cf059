//! The web page end to end in real headless Chromium, driven over WebDriver (Debian's
//! `chromium` + `chromium-driver`, installed by `scripts/test.sh`): upload two images and a
//! DICOM through the page's file input, wait for the BI-RADS label with its meaning, the
//! descriptors in the lexicon's words and the Grad-CAM overlay; the DICOM's preview comes from
//! the server's decoded pixels; a feature's Grad-CAM is chosen on a card; the printable report
//! opens in a new window and prints to a one-page PDF (`target/browser-report.pdf`); an
//! unreadable upload shows its error; a screenshot goes to `target/browser-test.png`.
//! Set `BIRADS_SKIP_BROWSER=1` to skip on a machine without Chromium.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod corpus;
mod support;
use support::Kill;

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One WebDriver command; returns the `value` of the answer.
fn wd(method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
    let req = ureq::request(method, url).timeout(Duration::from_secs(60));
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => {
            return Err(r.into_string().unwrap_or_default());
        }
        Err(e) => return Err(e.to_string()),
    };
    let v: Value = serde_json::from_str(&resp.into_string().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok(v["value"].clone())
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_all(session: &str, css: &str) -> Vec<String> {
    wd(
        "POST",
        &format!("{session}/elements"),
        Some(json!({"using": "css selector", "value": css})),
    )
    .map(|v| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e[ELEMENT].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

fn text(session: &str, id: &str) -> String {
    wd("GET", &format!("{session}/element/{id}/text"), None)
        .unwrap()
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Runs `script` in the page; returns its value.
fn exec(session: &str, script: &str) -> Value {
    wd(
        "POST",
        &format!("{session}/execute/sync"),
        Some(json!({ "script": script, "args": [] })),
    )
    .unwrap()
}

/// Waits until `script` returns true.
fn wait_until(session: &str, what: &str, script: &str) {
    let t = Instant::now();
    while exec(session, script) != json!(true) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `css` matches at least `n` elements.
fn wait_for(session: &str, css: &str, n: usize) -> Vec<String> {
    let t = Instant::now();
    loop {
        let found = find_all(session, css);
        if found.len() >= n {
            return found;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {n} × {css}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_page_predicts_uploaded_images_in_headless_chromium() {
    if std::env::var_os("BIRADS_SKIP_BROWSER").is_some() {
        eprintln!("BIRADS_SKIP_BROWSER set: skipped");
        return;
    }
    let driver = which("chromedriver").expect(
        "chromedriver not found: install Debian's chromium and chromium-driver \
         (.ci/run does), or set BIRADS_SKIP_BROWSER=1",
    );
    let dir = tempfile::tempdir().unwrap();
    // Two synthetic images and one broken upload.
    let images = support::synth_images(dir.path(), 4, 220, 320);
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"not an image at all").unwrap();
    let scan = dir.path().join("scan.dcm");
    let frame = image::open(&images[2]).unwrap().to_rgb8();
    std::fs::write(&scan, corpus::dicom::rgb(&frame)).unwrap();

    // The server, with the small fixture models.
    let server = support::start_server(&[]);
    let base = server.base.clone();

    // chromedriver and a headless session.
    let port = free_port();
    let _driver = Kill(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wd_base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while wd("GET", &format!("{wd_base}/status"), None).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
    ];
    args.push("--disable-dev-shm-usage");
    let mut opts = json!({ "args": args });
    if let Some(bin) = which("chromium") {
        opts["binary"] = json!(bin);
    }
    let created = wd(
        "POST",
        &format!("{wd_base}/session"),
        Some(json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": opts}}})),
    )
    .expect("start a headless Chromium session");
    let session = format!(
        "{wd_base}/session/{}",
        created["sessionId"].as_str().unwrap()
    );
    let result = std::panic::catch_unwind(|| {
        wd(
            "POST",
            &format!("{session}/url"),
            Some(json!({ "url": base })),
        )
        .unwrap();
        // The page found the server and its models.
        let status = wait_for(&session, "#status", 1);
        let t = Instant::now();
        while !text(&session, &status[0]).starts_with("ready") {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "page never became ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Upload through the page's own file input (what drag and drop feeds too).
        let input = wait_for(&session, "#files", 1);
        let files: Vec<String> = images[..2]
            .iter()
            .chain([&broken, &scan])
            .map(|p| p.display().to_string())
            .collect();
        wd(
            "POST",
            &format!("{session}/element/{}/value", input[0]),
            Some(json!({ "text": files.join("\n") })),
        )
        .unwrap();
        let labels = wait_for(&session, "[data-testid=birads-label]", 3);
        for l in &labels {
            let t = text(&session, l);
            let class = t
                .strip_prefix("BI-RADS ")
                .unwrap_or_else(|| panic!("label {t:?}"));
            assert!(["2", "3", "4A", "4B", "4C", "5"].contains(&class), "{t}");
        }
        let features = wait_for(&session, "[data-testid=features]", 3);
        let f = text(&session, &features[0]);
        for name in ["margin", "calcifications", "orientation", "shape"] {
            assert!(f.contains(name), "{f}");
        }
        let meanings = wait_for(&session, "[data-testid=meaning]", 3);
        assert!(text(&session, &meanings[0]).contains("likelihood of malignancy"));
        // The DICOM is drawn from the server's decoded pixels, at its own size.
        wait_until(
            &session,
            "the DICOM preview",
            "const c = [...document.querySelectorAll('.card')].find(c => c.querySelector('h2').textContent === 'scan.dcm'); \
             const v = c && c.querySelector('canvas[data-source=server]'); return !!v && v.width > 0;",
        );
        let errors = wait_for(&session, "[data-testid=error]", 1);
        assert!(
            text(&session, &errors[0]).contains("cannot read the image"),
            "{}",
            text(&session, &errors[0])
        );
        wait_for(&session, "[data-testid=cam]", 3);
        // A feature's Grad-CAM, chosen on the DICOM's card.
        let card = "[...document.querySelectorAll('.card')].find(c => c.querySelector('h2').textContent === 'scan.dcm')";
        let option = exec(
            &session,
            &format!(
                "return {card}.querySelector('[data-testid=cam-target] option[value=shape]');"
            ),
        );
        wd(
            "POST",
            &format!(
                "{session}/element/{}/click",
                option[ELEMENT].as_str().unwrap()
            ),
            Some(json!({})),
        )
        .unwrap();
        wait_until(
            &session,
            "the shape Grad-CAM",
            &format!("return !!{card}.querySelector('img.cam[data-target=shape]');"),
        );
        // The printable report: a new window, printed to PDF.
        let main = wd("GET", &format!("{session}/window"), None).unwrap();
        let button = exec(
            &session,
            &format!("return {card}.querySelector('[data-testid=report]');"),
        );
        wd(
            "POST",
            &format!(
                "{session}/element/{}/click",
                button[ELEMENT].as_str().unwrap()
            ),
            Some(json!({})),
        )
        .unwrap();
        let t = Instant::now();
        let report = loop {
            let handles = wd("GET", &format!("{session}/window/handles"), None).unwrap();
            if let Some(h) = handles.as_array().unwrap().iter().find(|h| **h != main) {
                break h.clone();
            }
            assert!(t.elapsed() < Duration::from_secs(30), "no report window");
            std::thread::sleep(Duration::from_millis(100));
        };
        wd(
            "POST",
            &format!("{session}/window"),
            Some(json!({ "handle": report })),
        )
        .unwrap();
        wait_until(
            &session,
            "the report",
            "return !!document.body && document.body.innerText.includes('Descriptors (BI-RADS ultrasound lexicon)');",
        );
        let body = exec(&session, "return document.body.innerText;");
        let body = body.as_str().unwrap();
        for part in [
            "scan.dcm",
            "Grad-CAM: shape",
            "Discordance",
            "not a substitute for a radiologist",
        ] {
            assert!(body.contains(part), "report lacks {part:?}: {body}");
        }
        let images = exec(
            &session,
            "return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;",
        );
        assert_eq!(images, json!(2), "image and heatmap shown");
        let pdf = wd(
            "POST",
            &format!("{session}/print"),
            Some(json!({ "orientation": "portrait" })),
        )
        .unwrap();
        let pdf = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            pdf.as_str().unwrap(),
        )
        .unwrap();
        assert!(pdf.starts_with(b"%PDF"));
        let raw = String::from_utf8_lossy(&pdf);
        let pages = raw.matches("/Type /Page").count() - raw.matches("/Type /Pages").count();
        assert_eq!(pages, 1, "the report prints on one page");
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-report.pdf");
        std::fs::write(&out, &pdf).unwrap();
        wd("DELETE", &format!("{session}/window"), None).unwrap();
        wd(
            "POST",
            &format!("{session}/window"),
            Some(json!({ "handle": main })),
        )
        .unwrap();
        // The CSV button is live once results exist.
        let csv = wait_for(&session, "#csv", 1);
        let enabled = wd(
            "GET",
            &format!("{session}/element/{}/enabled", csv[0]),
            None,
        )
        .unwrap();
        assert_eq!(enabled, json!(true));
        let shot = wd("GET", &format!("{session}/screenshot"), None).unwrap();
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            shot.as_str().unwrap(),
        )
        .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-test.png");
        std::fs::write(&out, &png).unwrap();
        eprintln!("screenshot: {}", out.display());
    });
    let _ = wd("DELETE", &session, None);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
