#!/usr/bin/env bash
# The small image the built-in model's tests predict (crates/birads/tests/fixtures/builtin/):
# one synthetic B-mode-like image from birads' own generator (no third-party pixels), 240×200.
#
#     bash scripts/make_builtin_fixture.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run --release --quiet -- synth --out "$tmp" --train-cls 0 --train-fea 0 --test-cls 1 --test-fea 0 \
  --min-side 200 --max-side 240 --lesion-scale 1.5 --seed 7 >/dev/null
img=$(find "$tmp/testA/cla" -type f | head -1)
cp "$img" "crates/birads/tests/fixtures/builtin/synthetic_lesion.${img##*.}"
ls -l crates/birads/tests/fixtures/builtin/
