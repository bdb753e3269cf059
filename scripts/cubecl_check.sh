#!/usr/bin/env bash
# The GPU training code paths without a GPU (issue #15, point 6): the `tests/cubecl` of
# birads-model and birads-train on burn's wgpu backend, which runs the same burn-cubecl
# kernels, burn-fusion and autotune as burn's CUDA backend, on Mesa's software Vulkan driver
# (lavapipe). Checks birads' own operations (depthwise backward, exact GELU backward, the
# BatchNorm, LayerNorm and AdamW kernels), one forward and backward of both models, a few
# epochs of training in f32 and in f16 (`tests/half.rs`, the stand-in for CUDA's bf16), and the
# binary's `predict` and `bench device-check` with `--device wgpu`, all against the CPU, before
# device time is spent on them. About 10 minutes of tests after the
# build.
#
#   bash scripts/cubecl_check.sh          # installs mesa-vulkan-drivers when missing (lavapipe.sh)
#   bash scripts/cubecl_check.sh --count  # kernel launches per training step instead
#   bash scripts/cubecl_check.sh --host [--amp]  # the CPU time per step burn and cubecl spend
#                                                # (perf), f32 or the benchmark's mixed precision
#
# CI (scripts/test.sh) runs the kernels' own tests, the fast part of this; the whole models'
# passes and trainings here take another 10 minutes or more on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lavapipe.sh
if [ "${1:-}" = --count ]; then
  # Kernel launches per training step, phase by phase: f32 and amp, with and without fusion,
  # with burn's depthwise, LayerNorm or BatchNorm backward, or without the own kernels inside
  # them (examples/kernel_count.rs).
  cargo build -q -p birads-train --features wgpu --example kernel_count
  ex=${CARGO_TARGET_DIR:-target}/debug/examples/kernel_count
  count() { # [VAR=value ...] program model [--unfused]: one run with its own log
    local log
    log=$(mktemp)
    env CUBECL_DEBUG_LOG="$log" CUBECL_DEBUG_OPTION=profile "$@"
    rm -f "$log"
  }
  count "$ex" convnext
  count "$ex" convnext --amp
  count "$ex" convnext --unfused
  count BIRADS_DEPTHWISE_KERNEL=burn "$ex" convnext
  count BIRADS_DEPTHWISE=burn "$ex" convnext
  count BIRADS_LAYERNORM_KERNELS=burn "$ex" convnext
  count BIRADS_LAYERNORM=burn "$ex" convnext
  count "$ex" densenet
  count "$ex" densenet --amp
  count "$ex" densenet --unfused
  count BIRADS_BATCHNORM_KERNELS=burn "$ex" densenet
  count BIRADS_BATCHNORM=burn "$ex" densenet
  exit 0
fi
if [ "${1:-}" = --host ]; then
  # The host's work per training step, by thread and kind, sampled with perf over the steps
  # after the warm-up, one sample per 0.25 ms of a thread's CPU time (examples/host_time.rs,
  # scripts/host_profile.py).
  cargo build -q --release -p birads-train --features wgpu --example host_time
  ex=${CARGO_TARGET_DIR:-target}/release/examples/host_time
  d=$(mktemp -d)
  trap 'rm -rf "$d"' EXIT
  for model in convnext densenet; do
    rm -f "$d/ctl" "$d/ack"
    mkfifo "$d/ctl" "$d/ack"
    HOST_TIME_PERF=$d/ctl,$d/ack perf record -q -e cpu-clock -c 250000 -D -1 --control "fifo:$d/ctl,$d/ack" \
      -o "$d/perf.data" "$ex" "$model" 4 "${@:2}" 2> /dev/null
    perf report -i "$d/perf.data" -n --sort pid,dso,sym -F sample,pid,dso,sym --stdio 2> /dev/null |
      python3 scripts/host_profile.py --sample-ms 0.25 --steps 4
  done
  exit 0
fi
cargo test -p birads-model --features wgpu --test cubecl --test adamw --test amp_kernel -- --test-threads 1 \
  --include-ignored "$@"
# half.rs: training in f16 (wgpu's stand-in for CUDA's bf16), its own process.
cargo test -p birads-train --features wgpu --test cubecl --test half -- --test-threads 1 "$@"
# The binary's `--device wgpu`: predict with both models and the device check (tests/device.rs).
cargo test -p birads --features wgpu --test device -- --include-ignored on_wgpu "$@"
