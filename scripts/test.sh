#!/usr/bin/env bash
# Every test of birads on a fresh machine, setting up what is missing first:
#   - Debian's chromium + chromium-driver (the web page's end-to-end test),
#   - a Python environment in target/py with maturin, pytest, numpy, onnx and onnxruntime
#     (no PyTorch),
#   - the birads Python package built from python/ (maturin, the dev profile so that it reuses
#     what `cargo test` compiles),
# then the Rust suite (`cargo test --workspace`) and the Python suite (`pytest python/tests`).
# Needs ../shared/data/bus-bra beside the checkout. CI (.ci/run) runs this script.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

test -f ../shared/data/bus-bra/labels.csv || {
  echo "../shared/data/bus-bra is missing (BUS-BRA beside the checkout)" >&2
  exit 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v chromedriver >/dev/null; then
  echo "== installing chromium and chromium-driver"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

py=target/py/bin/python
if ! "$py" -c "import maturin, pytest, numpy, onnx, onnxruntime" 2>/dev/null; then
  echo "== setting up $py (maturin, pytest, numpy, onnx, onnxruntime)"
  python3 -m venv target/py
  "$py" -m pip install -q --upgrade pip
  "$py" -m pip install -q "maturin>=1.5,<2" pytest numpy onnx onnxruntime
fi

echo "== Rust tests"
BIRADS_PYTHON="$PWD/$py" cargo test --workspace --locked

echo "== the Python package"
# No build isolation: maturin comes from target/py (its bin folder must be on PATH for pip's
# build backend), nothing is downloaded while building.
PATH="$PWD/target/py/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev --locked" "$py" -m pip install -q --force-reinstall --no-deps --no-build-isolation ./python

echo "== Python tests"
BIRADS_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/birads" "$py" -m pytest -q python/tests
