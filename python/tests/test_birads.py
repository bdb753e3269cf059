"""The birads Python package against the birads command-line tool (same outputs), its errors,
and a PyTorch-free round trip through ONNX Runtime.

Needs the `birads` binary (BIRADS_BIN, else target/release/birads of this checkout) and BUS-BRA
beside the checkout (../shared/data/bus-bra); `scripts/test.sh` provides both.
"""
import csv
import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import birads

ROOT = Path(__file__).resolve().parents[2]
BUSBRA = ROOT.parent / "shared" / "data" / "bus-bra"
BIN = Path(os.environ.get("BIRADS_BIN", ROOT / "target" / "release" / "birads"))


def cli(*args):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Every 125th BUS-BRA image (15), linked into a flat folder, with their labels."""
    d = tmp_path_factory.mktemp("images")
    with open(BUSBRA / "labels.csv") as f:
        rows = list(csv.DictReader(f))[::125]
    for r in rows:
        (d / Path(r["image"]).name).symlink_to(BUSBRA / r["image"])
    return d, rows


def read_prob(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], {r[0]: np.array([float(v) for v in r[1:]]) for r in rows[1:]}


def test_predict_and_preprocess_equal_the_cli(images, tmp_path):
    d, _ = images
    cli("predict", "--input", d, "--output", tmp_path / "cli", "--probabilities")
    header, want = read_prob(tmp_path / "cli" / "cla_prob.csv")
    model = birads.Model.load()
    assert model.purpose == "grading" and model.classes == ["2", "3", "4", "5"]
    assert header[1:] == [f"p_{c}" for c in model.classes]
    paths = sorted(d.iterdir())
    by_path = model.predict(paths)
    assert by_path.shape == (len(paths), 4) and by_path.dtype == np.float32
    for p, row in zip(paths, by_path):
        np.testing.assert_allclose(row, want[p.name], atol=1e-6)
    # The tensors preprocess() gives are the ones predict feeds the model: same outputs.
    tensors = np.stack([birads.preprocess(birads.load_image(p), model) for p in paths])
    np.testing.assert_array_equal(model.predict(tensors), by_path)
    np.testing.assert_array_equal(model.predict([birads.load_image(p) for p in paths]), by_path)
    np.testing.assert_array_equal(model.predict(paths, batch_size=3, threads=1), by_path)
    # predict_folder writes the very files the CLI writes.
    s = birads.predict_folder(d, tmp_path / "py", probabilities=True)
    assert s["birads"] == len(paths) and s["features"] is None and s["skipped"] == []
    assert any("no built-in feature model" in n for n in s["notes"])
    for name in ("cla_pre.csv", "cla_prob.csv"):
        assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()


def test_the_original_chain_and_cut_black():
    img = np.full((300, 400, 3), 120, dtype=np.uint8)
    img[:, :60] = 0  # a black band on the left, as scanners leave
    x = birads.preprocess(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_array_equal(x, birads.preprocess(img, crop=672, size=224))
    # CenterCrop 672 pads the 400×300 image with zeros: the border is (0 - mean) / std.
    np.testing.assert_allclose(x[0, 0, 0], -0.485 / 0.229, rtol=1e-6)
    small = birads.preprocess(img, size=64, crop=0, cut_black=True)
    assert small.shape == (3, 64, 64)
    np.testing.assert_allclose(small[0], (120 / 255 - 0.485) / 0.229, rtol=1e-5)
    trimmed, box = birads.cut_black(img)
    assert box == (60, 0, 400, 300) and trimmed.shape == (300, 340, 3)


def test_augment_is_seeded_and_carries_the_box():
    img = birads.load_image(BUSBRA / "images" / "busbra_0001-l.jpg")
    box = (0.5, 0.2, 0.4, 0.25)
    aug = birads.Augment(seed=11)
    a, ba = aug(img, box, index=3)
    b, bb = aug(img, box, index=3)
    c, _ = aug(img, box, index=4)
    assert a.shape == (3, 224, 224) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert ba == bb and not np.array_equal(a, c)
    assert ba is None or all(0 <= v <= 224 for v in ba)
    busbra = birads.Augment(seed=11, preset="busbra")
    t, tb = busbra(img, box, index=0)
    assert t.shape == (3, busbra.size, busbra.size)
    assert tb is not None and tb[0] < tb[2] and tb[1] < tb[3]
    # Without an index, calls are numbered 0, 1, 2, …
    fresh = birads.Augment(seed=11)
    np.testing.assert_array_equal(fresh(img, box)[0], aug(img, box, index=0)[0])


def test_evaluate_equals_the_cli(images, tmp_path):
    d, rows = images
    truth = tmp_path / "truth.csv"
    with open(truth, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "birads"])
        w.writerows([[d / Path(r["image"]).name, r["birads"]] for r in rows])
    cli("predict", "--input", d, "--output", tmp_path / "pred", "--probabilities")
    cli("eval", "--pred", tmp_path / "pred", "--truth", truth, "--out", tmp_path / "eval")
    want = json.loads((tmp_path / "eval" / "eval.json").read_text())
    got = birads.evaluate(tmp_path / "pred", truth, report=tmp_path / "py-report")
    assert got == want
    assert got["classification"]["images"] == len(rows)
    assert (tmp_path / "py-report" / "report.html").is_file()


def test_errors_are_exceptions_with_the_cli_messages(tmp_path):
    with pytest.raises(birads.BiradsError, match="No such file"):
        birads.load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(birads.BiradsError, match="bad.jpg"):
        birads.Model.load().predict([bad])
    with pytest.raises(birads.BiradsError, match="not a lesion-feature model"):
        birads.Model.load("builtin", task="fea")
    with pytest.raises(birads.BiradsError):
        birads.Model.load(tmp_path / "missing.safetensors")
    model = birads.Model.load()
    size = model.input_size
    with pytest.raises(birads.BiradsError, match=rf"\[N, 3, {size}, {size}\]"):
        model.predict(np.zeros((1, 3, size + 1, size + 1), dtype=np.float32))
    with pytest.raises(birads.BiradsError, match="uint8"):
        birads.preprocess(np.zeros((10, 10, 4), dtype=np.uint8))
    with pytest.raises(birads.BiradsError, match="preset"):
        birads.Augment(preset="imagenet")
    with pytest.raises(birads.BiradsError, match="box"):
        birads.Augment()(np.zeros((50, 50, 3), dtype=np.uint8), (0.5, 0.5, 2.0, 0.1))
    with pytest.raises(birads.BiradsError, match="not a folder"):
        birads.predict_folder(tmp_path / "nowhere", tmp_path / "out")


def test_the_gil_is_released_while_predicting(images):
    d, _ = images
    model = birads.Model.load()
    paths = sorted(d.iterdir()) * 6
    ticks = [0]
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks[0] += 1

    t = threading.Thread(target=count)
    t.start()
    before = ticks[0]
    model.predict(paths)
    during = ticks[0] - before
    done.set()
    t.join()
    # Holding the GIL for the whole call would leave the counting thread at a standstill.
    assert during > 1000, during


def test_onnx_round_trip_without_pytorch(images, tmp_path):
    import onnx
    import onnxruntime as ort

    d, rows = images
    model = birads.Model.load()
    path = tmp_path / "builtin.onnx"
    model.export_onnx(path)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["birads.classes"]) == model.classes
    assert json.loads(meta["birads.preprocess"]) == model.preprocess
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    paths = sorted(d.iterdir())
    x = np.stack([birads.preprocess(p, model) for p in paths])
    (got,) = s.run(["probabilities"], {"image": x})
    np.testing.assert_allclose(got, model.predict(paths), atol=1e-5)
    # And the CLI's export writes the same graph.
    cli("export", "--onnx", "--weights", "builtin", "--out", tmp_path / "cli.onnx")
    assert (tmp_path / "cli.onnx").read_bytes() == path.read_bytes()


def test_the_wheel_layout_is_what_the_tests_import():
    """scripts/test.sh lays the package out as the wheel does (python/birads + the extension
    as birads/_native); pyproject.toml must describe that same layout, or `pip install
    ./python` would build something other than what these tests checked."""
    import tomllib

    py = ROOT / "python"
    with open(py / "pyproject.toml", "rb") as f:
        maturin = tomllib.load(f)["tool"]["maturin"]
    assert maturin["module-name"] == birads._native.__name__
    assert maturin["python-packages"] == ["birads"]
    assert (py / maturin["python-source"] / "birads" / "__init__.py").is_file()
    with open(py / maturin["manifest-path"], "rb") as f:
        cargo = tomllib.load(f)
    assert "cdylib" in cargo["lib"]["crate-type"]
    assert set(maturin["features"]) <= set(cargo["features"])
    # The package's Python files are the ones imported, not a stale installed copy.
    assert Path(birads.__file__).read_bytes() == (py / "birads" / "__init__.py").read_bytes()
