#!/usr/bin/env bash
# The CPU side of the mixed-precision check (issue #15, point 2): the demo's two short
# training runs (configs/precision-{cls,fea}.toml) on the demo's synthetic data, in f32 on
# the CPU, for seeds 1-3; their last-epoch figures go to docs/gpu/precision-cpu.csv.
# scripts/gpu_check.sh runs the same commands on a GPU in amp and bf16 and compares
# (scripts/precision_compare.py).
#
#   bash scripts/precision_reference.sh [BIRADS] [WORKDIR]
set -euo pipefail
BIRADS=${1:-target/release/birads}
W=${2:-$(mktemp -d)}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/precision_common.sh"
synth_data "$BIRADS" "$W/synth"
for seed in 1 2 3; do
  for task in cls fea; do
    "$BIRADS" train "$task" --data "$W/synth" --val "$W/synth/testA" \
      --config "$here/configs/precision-$task.toml" --seed "$seed" --out "$W/$task-cpu-$seed" > "$W/$task-cpu-$seed.log"
  done
done
python3 "$here/scripts/precision_compare.py" collect --data-digest "$(data_digest "$W/synth")" \
  --runs "$W"/cls-cpu-? "$W"/fea-cpu-? > "$here/docs/gpu/precision-cpu.csv"
cat "$here/docs/gpu/precision-cpu.csv"
