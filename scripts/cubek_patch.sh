#!/usr/bin/env bash
# Runs a cargo command with cubek-matmul 0.2.0 (the version burn 0.21 pins) patched so that its
# matmuls check bounds along k unless k is a multiple of TWO stages instead of one.
#
# Why (docs/gpu/README.md, "A known problem"): cubek-matmul 0.2.0's multi-stage matmuls
# (double-buffered, ordered, specialised) run an even number of stages along k, and turn the
# bounds check along k off whenever k is a multiple of one stage. For k an odd multiple of a
# stage they read one stage past the end of the operands' rows or columns. On the software
# Vulkan driver that is measured (tests/cubecl/matmul_kernels.rs); on CUDA, where such a read
# gets other tensors' values, products with k an odd multiple of 32 are at risk. With the
# check on for those k, the reads past k are masked to zero and the extra stage adds nothing.
# The change is one expression in `definition/blueprint.rs`; nothing of cubek is kept in this
# repository: the script unpacks the crate cargo downloaded into target/patched and edits it
# there.
#
#   bash scripts/cubek_patch.sh test --workspace --features birads-model/wgpu --test cubecl \
#        -- --include-ignored patched_cubek      # the unit kernels right past one stage
#   CUDARC_CUDA_VERSION=13000 bash scripts/cubek_patch.sh build --release --features cuda \
#        -p birads --target-dir /work/tcuda-patched
#
# The patch changes Cargo.lock (cubek-matmul's source becomes a path); the script puts the
# original back when cargo is done, so --locked cannot be passed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { sed -n 2,22p "$0" >&2; exit 2; }

crate=cubek-matmul-0.2.0
target="${CARGO_TARGET_DIR:-$PWD/target}"
dst="$target/patched/$crate"
cargo fetch --locked >/dev/null
archive=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate.crate" | head -n 1)
rm -rf "$dst" && mkdir -p "$target/patched"
tar -xzf "$archive" -C "$target/patched"

file="$dst/src/definition/blueprint.rs"
one='!(problem.k as u32).is_multiple_of(tiling_scheme.elements_per_stage_along_k())'
two='!(problem.k as u32).is_multiple_of(2 * tiling_scheme.elements_per_stage_along_k())'
python3 - "$file" "$one" "$two" <<'PY'
import sys
path, one, two = sys.argv[1:]
text = open(path).read()
if text.count(one) != 1:
    sys.exit(f"{path}: the expression to patch is not there once")
open(path, "w").write(text.replace(one, two))
PY
echo "cubek_patch: $file checks bounds along k unless k is a multiple of two stages" >&2

cp Cargo.lock "$target/patched/Cargo.lock.orig"
trap 'cp "$target/patched/Cargo.lock.orig" Cargo.lock' EXIT
cargo --config "patch.crates-io.cubek-matmul.path=\"$dst\"" "$@"
