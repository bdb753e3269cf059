#!/usr/bin/env bash
# Every test of birads on a fresh machine, setting up what is missing first:
#   - Debian's chromium + chromium-driver (the web page's end-to-end test),
#   - a Python environment in target/py with maturin, pytest, numpy, onnx, onnxruntime and
#     cbor2 (the kernel cache's records, scripts/cuda_dry_run/assemble_kernels.py; no PyTorch),
#   - Mesa's software Vulkan driver (scripts/lavapipe.sh),
# then the Rust suite (`cargo test --workspace`), the Python suite (`pytest python/tests`)
# against the Python package laid out as its wheel lays it out (python/birads + the extension).
# The Rust suite includes birads' own GPU kernels on burn's wgpu backend over the software
# driver, each against a plain reference or burn's operations (issue #15: the same cubecl
# kernels CUDA runs, tested without a GPU): birads-model's `wgpu` feature is on for the whole
# workspace, and the binary's, whose `--device wgpu` tests (tests/device.rs) run the GPU paths
# of predict and the device check there. The feature only adds modules (the CPU code is the same), and with it on for every
# crate, each crate compiles once: turned on for birads-model alone, burn and everything under
# it resolve to other features (serde, burn-std, burn-backend …) and compile a second time,
# 12 minutes on two cores. The whole models' passes and trainings on that backend are ignored
# here and run by scripts/cubecl_check.sh (10 minutes more).
# The extension is compiled in the same cargo invocation as the tests: built alone (as maturin
# builds it) the dependencies resolve to other feature sets and half the tree compiles again,
# minutes on a 2-core CI machine. `--wheel` also builds and installs the real wheel with pip
# (maturin), the way users install it.
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
. scripts/lavapipe.sh

py=target/py/bin/python
if ! "$py" -c "import maturin, pytest, numpy, onnx, onnxruntime, cbor2" 2>/dev/null; then
  echo "== setting up $py (maturin, pytest, numpy, onnx, onnxruntime, cbor2)"
  python3 -m venv target/py
  "$py" -m pip install -q --upgrade pip
  "$py" -m pip install -q "maturin>=1.5,<2" pytest numpy onnx onnxruntime "cbor2>=5,<6"
fi

target="${CARGO_TARGET_DIR:-$PWD/target}"
export PYO3_PYTHON="$PWD/$py"
features=(--features birads-model/wgpu,birads/wgpu)
echo "== building the tests, the binary and the Python extension"
cargo build --workspace --locked "${features[@]}" --lib --bins --tests --examples

echo "== Rust tests (birads' GPU kernels among them, on Mesa's software Vulkan driver)"
BIRADS_PYTHON="$PWD/$py" cargo test --workspace --locked "${features[@]}"

echo "== the Python package"
pkg="$target/py-pkg"
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r python/birads "$pkg/"
cp "$target/debug/libbirads_py.so" "$pkg/birads/_native.abi3.so"
if [ "${1:-}" = --wheel ]; then
  # No build isolation: maturin comes from target/py (its bin folder must be on PATH for pip's
  # build backend), nothing is downloaded while building.
  PATH="$PWD/target/py/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev --locked" \
    "$py" -m pip install -q --force-reinstall --no-deps --no-build-isolation ./python
  pkg=""
fi

echo "== Python tests"
PYTHONPATH="$pkg" BIRADS_BIN="$target/debug/birads" "$py" -m pytest -q python/tests

