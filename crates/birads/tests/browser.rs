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

/// A WebDriver session: `url` is `…/session/<id>`.
struct Browser {
    url: String,
}

impl Browser {
    /// chromedriver on a free port and a headless Chromium session on it.
    fn start(driver: &Path) -> (Kill, Browser) {
        let port = free_port();
        let process = Kill(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while wd("GET", &format!("{base}/status"), None).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1400,1000",
            "--disable-dev-shm-usage",
        ];
        let mut opts = json!({ "args": args });
        if let Some(bin) = which("chromium") {
            opts["binary"] = json!(bin);
        }
        let created = wd(
            "POST",
            &format!("{base}/session"),
            Some(json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": opts}}})),
        )
        .expect("start a headless Chromium session");
        let id = created["sessionId"].as_str().unwrap();
        let url = format!("{base}/session/{id}");
        (process, Browser { url })
    }

    /// `method` on `path` under the session.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        wd(method, &format!("{}{path}", self.url), body).unwrap()
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        let found = wd(
            "POST",
            &format!("{}/elements", self.url),
            Some(json!({"using": "css selector", "value": css})),
        );
        let ids = |v: Value| -> Vec<String> {
            let all = v.as_array().cloned().unwrap_or_default();
            all.iter()
                .map(|e| e[ELEMENT].as_str().unwrap().to_string())
                .collect()
        };
        found.map(ids).unwrap_or_default()
    }

    fn text(&self, id: &str) -> String {
        let v = self.call("GET", &format!("/element/{id}/text"), None);
        v.as_str().unwrap_or("").to_string()
    }

    /// Runs `script` in the page; returns its value.
    fn exec(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Clicks the element a script returned.
    fn click(&self, element: &Value) {
        let id = element[ELEMENT].as_str().expect("an element");
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Waits until `script` returns true.
    fn wait_until(&self, what: &str, script: &str) {
        let t = Instant::now();
        while self.exec(script) != json!(true) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `css` matches at least `n` elements.
    fn wait_for(&self, css: &str, n: usize) -> Vec<String> {
        let t = Instant::now();
        loop {
            let found = self.find_all(css);
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

    /// A screenshot or printout the browser sent, base64-decoded.
    fn decode(v: &Value) -> Vec<u8> {
        let b64 = v.as_str().expect("base64 text");
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap()
    }
}

/// Where the test leaves its screenshot and printout for people to look at.
fn artefact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(name)
}

/// The page's card of the DICOM, as a JavaScript expression.
const SCAN_CARD: &str = "[...document.querySelectorAll('.card')].find(c => c.querySelector('h2').textContent === 'scan.dcm')";

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
    // Two synthetic images, one broken upload and a DICOM.
    let images = support::synth_images(dir.path(), 4, 220, 320);
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"not an image at all").unwrap();
    let scan = dir.path().join("scan.dcm");
    let frame = image::open(&images[2]).unwrap().to_rgb8();
    std::fs::write(&scan, corpus::dicom::rgb(&frame)).unwrap();
    let uploads = [&images[0], &images[1], &broken, &scan];

    // The server, with the small fixture models.
    let server = support::start_server(&[]);
    let (_driver, browser) = Browser::start(&driver);
    let result = std::panic::catch_unwind(|| {
        open_page(&browser, &server.base);
        upload_and_check_results(&browser, &uploads);
        choose_feature_cam(&browser);
        print_report(&browser);
        csv_and_screenshot(&browser);
    });
    let _ = wd("DELETE", &browser.url, None);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// The page found the server and its models.
fn open_page(browser: &Browser, base: &str) {
    browser.call("POST", "/url", Some(json!({ "url": base })));
    let status = browser.wait_for("#status", 1);
    let t = Instant::now();
    while !browser.text(&status[0]).starts_with("ready") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "page never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Upload through the page's own file input (what drag and drop feeds too); labels with their
/// meaning, descriptors and heatmaps for the three readable files, the DICOM drawn from the
/// server's pixels, an error for the broken one.
fn upload_and_check_results(browser: &Browser, uploads: &[&PathBuf]) {
    let input = browser.wait_for("#files", 1);
    let files: Vec<String> = uploads.iter().map(|p| p.display().to_string()).collect();
    browser.call(
        "POST",
        &format!("/element/{}/value", input[0]),
        Some(json!({ "text": files.join("\n") })),
    );
    for l in browser.wait_for("[data-testid=birads-label]", 3) {
        let t = browser.text(&l);
        let class = t
            .strip_prefix("BI-RADS ")
            .unwrap_or_else(|| panic!("label {t:?}"));
        assert!(["2", "3", "4A", "4B", "4C", "5"].contains(&class), "{t}");
    }
    let features = browser.wait_for("[data-testid=features]", 3);
    let f = browser.text(&features[0]);
    for name in ["margin", "calcifications", "orientation", "shape"] {
        assert!(f.contains(name), "{f}");
    }
    let meanings = browser.wait_for("[data-testid=meaning]", 3);
    assert!(browser
        .text(&meanings[0])
        .contains("likelihood of malignancy"));
    // The DICOM is drawn from the server's decoded pixels, at its own size.
    browser.wait_until(
        "the DICOM preview",
        &format!("const c = {SCAN_CARD}; const v = c && c.querySelector('canvas[data-source=server]'); return !!v && v.width > 0;"),
    );
    let errors = browser.wait_for("[data-testid=error]", 1);
    let error = browser.text(&errors[0]);
    assert!(error.contains("cannot read the image"), "{error}");
    browser.wait_for("[data-testid=cam]", 3);
}

/// A feature's Grad-CAM, chosen on the DICOM's card.
fn choose_feature_cam(browser: &Browser) {
    let option = browser.exec(&format!(
        "return {SCAN_CARD}.querySelector('[data-testid=cam-target] option[value=shape]');"
    ));
    browser.click(&option);
    browser.wait_until(
        "the shape Grad-CAM",
        &format!("return !!{SCAN_CARD}.querySelector('img.cam[data-target=shape]');"),
    );
}

/// The DICOM's printable report: a new window with the image, the chosen heatmap and the
/// report's sections, printed to a one-page PDF; then back to the main window.
fn print_report(browser: &Browser) {
    let main = browser.call("GET", "/window", None);
    browser.click(&browser.exec(&format!(
        "return {SCAN_CARD}.querySelector('[data-testid=report]');"
    )));
    let t = Instant::now();
    let report = loop {
        let handles = browser.call("GET", "/window/handles", None);
        if let Some(h) = handles.as_array().unwrap().iter().find(|h| **h != main) {
            break h.clone();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no report window");
        std::thread::sleep(Duration::from_millis(100));
    };
    browser.call("POST", "/window", Some(json!({ "handle": report })));
    browser.wait_until(
        "the report",
        "return !!document.body && document.body.innerText.includes('Descriptors (BI-RADS ultrasound lexicon)');",
    );
    let body = browser.exec("return document.body.innerText;");
    let body = body.as_str().unwrap();
    for part in [
        "scan.dcm",
        "Grad-CAM: shape",
        "Discordance",
        "not a substitute for a radiologist",
    ] {
        assert!(body.contains(part), "report lacks {part:?}: {body}");
    }
    let shown = browser
        .exec("return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;");
    assert_eq!(shown, json!(2), "image and heatmap shown");
    let pdf = Browser::decode(&browser.call(
        "POST",
        "/print",
        Some(json!({ "orientation": "portrait" })),
    ));
    assert!(pdf.starts_with(b"%PDF"));
    let raw = String::from_utf8_lossy(&pdf);
    let pages = raw.matches("/Type /Page").count() - raw.matches("/Type /Pages").count();
    assert_eq!(pages, 1, "the report prints on one page");
    std::fs::write(artefact("browser-report.pdf"), &pdf).unwrap();
    browser.call("DELETE", "/window", None);
    browser.call("POST", "/window", Some(json!({ "handle": main })));
}

/// The CSV button is live once results exist; a screenshot of the page for people.
fn csv_and_screenshot(browser: &Browser) {
    let csv = browser.wait_for("#csv", 1);
    let enabled = browser.call("GET", &format!("/element/{}/enabled", csv[0]), None);
    assert_eq!(enabled, json!(true));
    let png = Browser::decode(&browser.call("GET", "/screenshot", None));
    assert!(png.starts_with(b"\x89PNG"));
    let out = artefact("browser-test.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {}", out.display());
}
