//! Every item of the bad-input corpus (`tests/corpus`, table in `docs/bad-inputs.md`) through
//! `data check`, `predict` and `train`: each bad item is named with its reason, the good ones
//! beside it are still used, and the exit code is the documented one.

mod corpus;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use corpus::{Item, Outcome, FLAT_GOOD, ITEMS, NON_UTF8};

fn birads(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_birads"))
        .args(args)
        .output()
        .expect("run birads")
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// The corpus, written once per test into its own temporary folder.
fn corpus() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus::write_corpus(&dir.path().join("corpus"));
    (dir, root)
}

/// Running as root reads a mode-000 file anyway: then the item is an ordinary good image.
fn unreadable_is_readable(root: &Path) -> bool {
    std::fs::File::open(root.join("flat/unreadable.jpg")).is_ok()
}

fn effective(item: &Item, outcome: Outcome, root: &Path) -> Outcome {
    if item.path == "flat/unreadable.jpg" && unreadable_is_readable(root) {
        Outcome::Used
    } else {
        outcome
    }
}

/// Lines of `text` that report `severity` ("error"/"warning"/"skipped") about `item`: the
/// message names the item's path (readers name a duplicate stem without its extension).
fn reports<'a>(text: &'a str, root: &Path, item: &str, severity: &str) -> Vec<&'a str> {
    let full = root.join(item).display().to_string();
    let stem = match full.rsplit_once('.') {
        Some((s, ext)) if !ext.contains('/') => s.to_string(),
        _ => full.clone(),
    };
    text.lines()
        .filter(|l| l.trim_start().starts_with(severity) && l.contains(&stem))
        .collect()
}

/// Checks one command's output against the table column `column`.
fn assert_column(
    text: &str,
    root: &Path,
    items: &[(&Item, Outcome)],
    error_word: &str,
    what: &str,
) {
    for (item, outcome) in items {
        let outcome = effective(item, *outcome, root);
        match outcome {
            Outcome::Error(reason) => {
                let lines = reports(text, root, item.path, error_word);
                assert!(
                    lines.iter().any(|l| l.contains(reason)),
                    "{what}: expected '{error_word}' naming {} with '{reason}'; got {lines:?}\n{text}",
                    item.path
                );
            }
            Outcome::Warned(reason) => {
                let lines = reports(text, root, item.path, "warning");
                assert!(
                    lines.iter().any(|l| l.contains(reason)),
                    "{what}: expected a warning naming {} with '{reason}'\n{text}",
                    item.path
                );
            }
            Outcome::Used => {
                let full = root.join(item.path).display().to_string();
                let bad: Vec<&str> = text
                    .lines()
                    .filter(|l| l.trim_start().starts_with(error_word) && l.contains(&full))
                    .collect();
                assert!(
                    bad.is_empty(),
                    "{what}: {} should be used: {bad:?}",
                    item.path
                );
            }
            Outcome::NotApplicable => {}
        }
    }
}

fn flat_items(pick: fn(&Item) -> Outcome) -> Vec<(&'static Item, Outcome)> {
    ITEMS
        .iter()
        .filter(|i| i.path.starts_with("flat/"))
        .map(|i| (i, pick(i)))
        .collect()
}

fn package_items(pick: fn(&Item) -> Outcome, part: &str) -> Vec<(&'static Item, Outcome)> {
    ITEMS
        .iter()
        .filter(|i| i.path.contains(part))
        .map(|i| (i, pick(i)))
        .collect()
}

#[test]
fn the_corpus_has_every_kind_of_bad_input() {
    let (_dir, root) = corpus();
    let bad = ITEMS
        .iter()
        .filter(|i| matches!(i.check, Outcome::Error(_)) || matches!(i.train, Outcome::Error(_)))
        .count();
    assert!(
        ITEMS.len() >= 25 && bad >= 20,
        "{} items, {bad} bad",
        ITEMS.len()
    );
    for item in ITEMS {
        let p = root.join(item.path);
        assert!(
            p.symlink_metadata().is_ok(),
            "{} was not written",
            item.path
        );
    }
    // The awkward-but-valid images really are what they claim.
    use birads_data::image_ops::{decode_path, dimensions};
    let rotated = decode_path(&root.join("flat/exif_rotated.jpg")).unwrap();
    assert_eq!(
        rotated.dimensions(),
        (100, 160),
        "EXIF orientation 6 applied"
    );
    assert_eq!(
        dimensions(&root.join("flat/extreme_aspect.png")).unwrap(),
        (3000, 4)
    );
    let black = decode_path(&root.join("flat/all_black.png")).unwrap();
    assert!(black.pixels().all(|p| p.0 == [0, 0, 0]));
    let bomb = std::fs::read(root.join("flat/bomb.png")).unwrap();
    assert!(bomb.len() < 100, "the bomb is a header, not data");
}

#[test]
fn data_check_names_every_bad_image_and_exits_1() {
    let (_dir, root) = corpus();
    let o = birads(&[
        os("data"),
        os("check"),
        os("--decode"),
        root.join("flat").as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let items = flat_items(|i| i.check);
    assert_column(&text, &root, &items, "error", "data check flat");
    // Every readable image was counted: the good ones, the valid awkward ones, the bad name.
    let used = items
        .iter()
        .filter(|(i, o)| effective(i, *o, &root) == Outcome::Used)
        .count();
    let read = used + FLAT_GOOD.len() + 1;
    assert!(
        text.contains(&format!("image sizes ({read} read)")),
        "{read} images should be read\n{text}"
    );
}

#[test]
fn data_check_names_every_bad_label_and_exits_1() {
    let (_dir, root) = corpus();
    let o = birads(&[
        os("data"),
        os("check"),
        os("--decode"),
        root.join("package").as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let items = package_items(|i| i.check, "package/");
    assert_column(&text, &root, &items, "error", "data check package");
}

#[test]
fn predict_skips_bad_images_predicts_the_rest_and_exits_2() {
    let (dir, root) = corpus();
    let fixtures = support::fixtures();
    let out = dir.path().join("pred");
    let o = birads(&[
        os("predict"),
        os("--input"),
        root.join("flat").as_os_str(),
        os("--output"),
        out.as_os_str(),
        os("--cla-weights"),
        fixtures.join("myconvnext_small.pth").as_os_str(),
        os("--fea-weights"),
        fixtures.join("mydensenet_small.pth").as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{text}");
    // Listing errors say "error", decode failures "skipped".
    let items = flat_items(|i| i.predict);
    let (listing, decoding): (Vec<_>, Vec<_>) = items
        .into_iter()
        .partition(|(i, _)| i.path == "flat/loop.jpg");
    assert_column(&text, &root, &listing, "error", "predict");
    assert_column(&text, &root, &decoding, "skipped", "predict");
    let bad_name = format!(
        "{}",
        root.join("flat")
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(NON_UTF8))
            .display()
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("warning")
            && l.contains(&bad_name)
            && l.contains("UTF-8")),
        "{text}"
    );
    // Exactly the usable images are in both CSVs, nothing else.
    let mut expected: Vec<String> = flat_items(|i| i.predict)
        .iter()
        .filter(|(i, o)| effective(i, *o, &root) == Outcome::Used)
        .map(|(i, _)| i.path.trim_start_matches("flat/").to_string())
        .chain(
            FLAT_GOOD
                .iter()
                .map(|g| g.trim_start_matches("flat/").to_string()),
        )
        .chain(std::iter::once(
            String::from_utf8_lossy(NON_UTF8).into_owned(),
        ))
        .collect();
    expected.sort();
    for csv_name in ["cla_pre.csv", "fea_pre.csv"] {
        let mut names: Vec<String> = csv::Reader::from_path(out.join(csv_name))
            .unwrap()
            .records()
            .map(|r| r.unwrap()[0].to_string())
            .collect();
        names.sort();
        assert_eq!(names, expected, "{csv_name}");
    }
}

fn train(task: &str, root: &Path, out: &Path) -> (Output, String) {
    let o = birads(&[
        os("train"),
        os(task),
        os("--data"),
        root.join("package").as_os_str(),
        os("--out"),
        out.as_os_str(),
        os("--model"),
        os("small"),
        os("--epochs"),
        os("1"),
        os("--image-size"),
        os("32"),
        os("--val-split"),
        os("0.25"),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o, text)
}

/// All image paths the run trained or validated on, from its split.json.
fn split_images(run: &Path) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("split.json")).unwrap()).unwrap();
    ["train_images", "val_images"]
        .iter()
        .flat_map(|k| v[k].as_array().unwrap().clone())
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn train_leaves_out_bad_items_trains_on_the_rest_and_exits_2() {
    let (dir, root) = corpus();
    for (task, part, good) in [
        ("cls", "乳腺分类训练数据集", 8 + 1),
        ("fea", "乳腺特征训练数据集", 6),
    ] {
        let run = dir.path().join(format!("run_{task}"));
        let (o, text) = train(task, &root, &run);
        assert_eq!(o.status.code(), Some(2), "{task}: {text}");
        assert!(run.join("best.safetensors").is_file(), "{task}: {text}");
        let items = package_items(|i| i.train, part);
        // Label problems are reader errors ("error: …"); an image that fails to decode during
        // training is "skipped …".
        let (decoding, labels): (Vec<_>, Vec<_>) = items
            .into_iter()
            .partition(|(i, _)| i.path.ends_with("corrupt.jpg"));
        assert_column(&text, &root, &labels, "error", task);
        assert_column(&text, &root, &decoding, "skipped", task);
        // The split holds every good image (and the decodable-but-warned one), and no image
        // whose label was bad.
        let images = split_images(&run);
        let cls_corrupt = 1; // corrupt.jpg has a valid label: it is in the split, then skipped
        let expected = if task == "cls" {
            good + cls_corrupt
        } else {
            good
        };
        assert_eq!(images.len(), expected, "{task}: {images:?}");
        for (item, outcome) in package_items(|i| i.train, part) {
            if let Outcome::Error(_) = outcome {
                let stem = Path::new(item.path).file_stem().unwrap().to_str().unwrap();
                if stem != "corrupt" {
                    assert!(
                        !images
                            .iter()
                            .any(|i| Path::new(i).file_stem().unwrap().to_str() == Some(stem)),
                        "{task}: {} should be left out",
                        item.path
                    );
                }
            }
        }
    }
}

/// `serve`: each image of `flat/` uploaded to `/v1/predict`. Readable images answer 200;
/// undecodable ones 422, bombs 413, each with a JSON error naming the reason; the server keeps
/// serving. (Names, symlinks, permissions and folders do not exist over HTTP: the client sends
/// bytes — the loop and the folder cannot be read by a client, the rest upload as images.)
#[test]
fn serve_answers_every_bad_upload_with_its_status_and_keeps_serving() {
    let (_dir, root) = corpus();
    let server = support::start_server(&[]);
    let url = format!("{}/v1/predict", server.base);
    for item in ITEMS.iter().filter(|i| i.path.starts_with("flat/")) {
        let Ok(bytes) = std::fs::read(root.join(item.path)) else {
            // Unreadable for the client too (loop, folder, mode 000 as non-root).
            continue;
        };
        if ![".jpg", ".png", ".dcm"]
            .iter()
            .any(|e| item.path.ends_with(e))
        {
            continue;
        }
        let resp = match ureq::post(&url).send_bytes(&bytes) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{}: {e}", item.path),
        };
        let status = resp.status();
        let body: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
        match effective(item, item.serve, &root) {
            Outcome::Error(reason) => {
                let code = if reason.contains("above") {
                    413
                } else if reason.contains("empty body") {
                    400
                } else {
                    422
                };
                assert_eq!(status, code, "{}: {body}", item.path);
                let msg = body["error"].as_str().unwrap();
                assert!(msg.contains(reason), "{}: {msg}", item.path);
            }
            Outcome::Used | Outcome::Warned(_) => {
                assert_eq!(status, 200, "{}: {body}", item.path);
                assert!(body["birads"]["label"].is_string(), "{}", item.path);
            }
            Outcome::NotApplicable => {}
        }
    }
    // Still serving.
    let good = std::fs::read(root.join(FLAT_GOOD[0])).unwrap();
    assert_eq!(ureq::post(&url).send_bytes(&good).unwrap().status(), 200);
}
