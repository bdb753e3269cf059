#!/usr/bin/env bash
# Every GPU check and benchmark of issue #15 in one run (under 8 minutes on an H200), from a
# birads built elsewhere with `--features cuda` and carried over:
#
#   # here (Rust, no GPU):
#   CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda --target-dir target/cuda
#   mkdir -p target/gpu && strip -o target/gpu/birads target/cuda/release/birads
#   # and, still here, whether NVRTC and ptxas take every kernel it launches (no GPU needed):
#   bash scripts/cuda_dry_run.sh target/cuda/release/birads
#   # and the kernels of this script's steps, ready-made for the device (on the binary as it
#   # will be carried; about 1 hour on 2 cores for the first seven steps, 33 MB):
#   bash scripts/cuda_dry_run.sh target/gpu/birads gpu-check kernels gpu-check-ready
#   xz -f target/gpu/birads   # 119 MB stripped, 21 MB compressed (gzip: 31; carry limit: 64 MiB)
#   # optionally the same build with cubek-matmul patched (scripts/cubek_patch.sh), as
#   # target/gpu/birads-patched.gz: steps 02-matmuls-*-patched run it
#   # there (GPU, no Rust), from the repository root, carrying target/gpu:
#   OUT=/some/folder bash scripts/gpu_check.sh [target/gpu/birads.xz or .gz]
#
# Each step has its own time limit and writes OUT/NN-name.txt; a failed step is reported and
# the rest still run; the exit status is the number of failed steps. PyTorch (for the
# side-by-side figures) is used when `python3 -c 'import torch'` works; ONLY=step1,step2
# runs a subset (names as in the step list below). DEVICE=cpu runs the same commands on the
# CPU, to try the script itself on a machine without a GPU (with ONLY= the cheap steps);
# DEVICE=wgpu, with a birads built with `--features wgpu`, runs its f32 steps through the GPU
# code paths on Mesa's software Vulkan driver (`. scripts/lavapipe.sh` first), e.g.
# ONLY=09-predict,10-serve,02-matmuls-small (amp and bf16 are CUDA's: those steps fail there).
# Autotune's choices come back in OUT/autotune: copied to target/gpu/autotune and carried with
# the binary, they spare a later call its tuning on the same GPU model (KERNEL_CACHE=dir keeps
# the compiled kernels elsewhere than target/gpu-cache).
# The kernels themselves can come ready: `bash scripts/cuda_dry_run.sh BINARY gpu-check kernels`
# runs this script's steps here on the stand-in driver and leaves every kernel they compiled,
# assembled for sm_90a, in target/gpu/kernels-sm_90a.tar.xz (carried with the binary it was
# made with; a different binary or a driver older than the assembler is refused below, and
# then the device compiles as before). TIME_SCALE=N multiplies every time limit (the stand-in
# compiles on 2 cores).
set -uo pipefail
export DEVICE=${DEVICE:-cuda}
BIRADS=${1:-$(ls target/gpu/birads.xz target/gpu/birads.gz 2> /dev/null | head -1)}
OUT=${OUT:-$(mktemp -d)}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# unxz FILE: its contents, with xz or, where xz is missing, Python's lzma.
unxz() {
  if command -v xz > /dev/null; then
    xz -dc "$1"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"
  fi
}
# unpacked FILE NAME: FILE itself, or where it was unpacked to (in $W, as NAME) when it ends in
# .gz or .xz (xz: 21 MB where gzip makes 31, room for the kernels under the 64 MiB carried).
unpacked() {
  local unpack
  case $1 in
    *.gz) unpack="gunzip -c" ;;
    *.xz) unpack=unxz ;;
    *) echo "$1"; return ;;
  esac
  $unpack "$1" > "$W/$2" && chmod +x "$W/$2" && echo "$W/$2"
}
BIRADS=$(unpacked "$BIRADS" birads)
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/precision_common.sh"
export -f synth_data data_digest
mkdir -p "$OUT"
# cubecl's on-disk caches, shared by every step: the kernels NVRTC compiled (PTX) and autotune's
# choice per convolution and product shape. A fresh process otherwise compiles its few hundred
# kernels again (DenseNet's training step: ~400 on wgpu, autotune's candidates included) and
# autotunes again (on lavapipe a cached autotune cut kernel_count's run from 208 to 58 s).
# Steps run in $W, where cubecl.toml points both caches here; autotune's choices come back in
# OUT/autotune, and carried as target/gpu/autotune they spare the next call its tuning.
CACHE=${KERNEL_CACHE:-$here/target/gpu-cache}
mkdir -p "$CACHE"
[ -d "$here/target/gpu/autotune" ] && cp -rn "$here/target/gpu/autotune" "$CACHE/"
export TIME_SCALE=${TIME_SCALE:-1}
# kernels_ready ARCHIVE: the kernels assembled ahead of time for this binary, into the cache
# (kernels already there, from an earlier call, are kept).
kernels_ready() {
  local k=$W/kernels
  mkdir -p "$k" && unxz "$1" | tar xf - -C "$k" || return 1
  local made_for assembler driver
  made_for=$(awk '$1 == "binary_sha256" { print $2 }' "$k/kernels-for.txt")
  assembler=$(awk '$1 == "ptxas_major" { print $2 }' "$k/kernels-for.txt")
  driver=$(nvidia-smi 2> /dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
  [ -z "${FAKE_CUDA_SM:-}" ] || driver=$assembler # the stand-in (cuda_dry_run.sh)
  if [ "$made_for" != "$(sha256sum < "$BIRADS" | cut -d' ' -f1)" ]; then
    echo "kernels: $1 was made for another birads binary; compiling on the device"
  elif [ -z "$driver" ] || [ "$driver" -lt "$assembler" ]; then
    echo "kernels: the driver (CUDA ${driver:-?}) is older than their assembler (CUDA $assembler); compiling on the device"
  else
    cp -rn "$k/cuda" "$CACHE/" && echo "kernels: $(kernel_count) ready in the cache, assembled for $(awk '$1 == "arch" { print $2 }' "$k/kernels-for.txt")"
  fi
}
# How many kernels the cache holds (one line each in its table of contents).
kernel_count() { cat "$CACHE"/cuda/*/ptx/toc* 2> /dev/null | wc -l; }
KERNELS=${KERNELS:-$here/target/gpu/kernels-sm_90a.tar.xz}
[ "$DEVICE" = cuda ] && [ -f "$KERNELS" ] && kernels_ready "$KERNELS"
kernels_at_start=$(kernel_count)
cat > "$W/cubecl.toml" <<EOF
[compilation]
cache = { file = "$CACHE" }
[autotune]
cache = { file = "$CACHE" }
EOF
failed=0
start=$(date +%s)
PY=python3
if ! $PY -c "import torch, torchvision; assert '$DEVICE' == 'cpu' or torch.cuda.is_available()" 2>/dev/null; then
  echo "no PyTorch with CUDA: birads' figures only"
  PY=""
fi
pyflag() { if [ -n "$PY" ]; then echo "--python $PY"; else echo "--no-python"; fi; }

# step NAME SECONDS COMMAND...: run with a time limit, output to OUT/NAME.txt and the log.
# Steps come in order of importance; once DEADLINE seconds (default 470) have passed, the
# rest are skipped and named.
step() {
  local name=$1 limit=$2
  shift 2
  case ",${ONLY:-$name}," in *",$name,"*) ;; *) return 0 ;; esac
  local t0=$(date +%s)
  if [ $(( t0 - start )) -ge $(( ${DEADLINE:-470} * TIME_SCALE )) ]; then
    echo "== $name skipped: the time is up"
    failed=$((failed + 1))
    return 0
  fi
  # Nothing runs past HARD seconds (default 570: one device call may last 600).
  local left=$(( ${HARD:-570} * TIME_SCALE - (t0 - start) ))
  limit=$(( limit * TIME_SCALE ))
  [ "$limit" -le "$left" ] || limit=$left
  echo "== $name (≤ ${limit} s; $(( t0 - start )) s in)"
  (cd "$W" && timeout "$limit" bash -c "$*") > "$OUT/$name.txt" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.txt"
  echo "-- $name: exit $rc, $(( $(date +%s) - t0 )) s, $(kernel_count) kernels in the cache"
  [ $rc -eq 0 ] || failed=$((failed + 1))
}

# Point 2: the demo's short training runs in amp and bf16 against CPU f32 over 3 seeds.
precision_runs() {
  synth_data "$BIRADS" "$W/synth"
  local digest=$(data_digest "$W/synth")
  for p in amp bf16; do
    for task in cls fea; do
      $BIRADS train $task --data $W/synth --val $W/synth/testA --config $here/configs/precision-$task.toml \
        --seed 1 --device $DEVICE --precision $p --engine burn --out $W/$task-$p-1 > $W/$task-$p-1.log 2>&1 || { tail -5 $W/$task-$p-1.log; return 1; }
    done
  done
  python3 $here/scripts/precision_compare.py compare --reference $here/docs/gpu/precision-cpu.csv \
    --data-digest $digest --runs $W/cls-amp-1 $W/cls-bf16-1 $W/fea-amp-1 $W/fea-bf16-1
}
export -f precision_runs
# Point 4: predict --device cuda against the CPU: same labels, probabilities within 1e-5.
predict_both() {
  set -e
  [ -d $W/synth ] || synth_data "$BIRADS" "$W/synth"
  # The built-in BI-RADS model, and the feature model of the precision step when it ran.
  local fea=""
  [ -f $W/fea-amp-1/last.safetensors ] && fea="--fea-weights $W/fea-amp-1/last.safetensors"
  $BIRADS predict --input $W/synth/testA --output $W/pred-cpu $fea --probabilities > /dev/null
  $BIRADS predict --input $W/synth/testA --output $W/pred-cuda $fea --probabilities --device $DEVICE --batch-size 32
  python3 - $W/pred-cpu $W/pred-cuda <<'PY'
import csv, sys
a, b = sys.argv[1:]
worst, labels = 0.0, 0
import os
for name in ["cla_prob.csv", "fea_prob.csv", "cla_pre.csv", "fea_pre.csv"]:
    if not os.path.exists(f"{a}/{name}"):
        continue
    ra = list(csv.reader(open(f"{a}/{name}"))); rb = list(csv.reader(open(f"{b}/{name}")))
    assert len(ra) == len(rb) and len(ra) > 1, name
    for x, y in zip(ra[1:], rb[1:]):
        assert x[0] == y[0], (x[0], y[0])
        if name.endswith("_pre.csv"):
            labels += x[1:] != y[1:]
        else:
            worst = max(worst, max(abs(float(p) - float(q)) for p, q in zip(x[1:], y[1:])))
print(f"predict cuda vs cpu: max |Δp| {worst:.2e}, {labels} rows with another label")
sys.exit(0 if worst <= 1e-5 and labels == 0 else 1)
PY
}
export -f predict_both
# Point 4: serve --device cuda answers as the CPU server does.
serve_both() {
  set -e
  [ -d $W/synth ] || synth_data "$BIRADS" "$W/synth"
  local img=$(ls $W/synth/testA/cla/* | head -1)
  $BIRADS serve --addr 127.0.0.1:18081 > $W/serve-cpu.log 2>&1 & local p1=$!
  $BIRADS serve --addr 127.0.0.1:18082 --device $DEVICE > $W/serve-cuda.log 2>&1 & local p2=$!
  trap "kill $p1 $p2 2> /dev/null" EXIT
  # The GPU server listens once it has compiled and autotuned for every batch size it forms.
  for i in $(seq $(( 85 * TIME_SCALE ))); do curl -sf 127.0.0.1:18081/health > /dev/null && curl -sf 127.0.0.1:18082/health > /dev/null && break; sleep 1; done
  grep -h "warmed up" $W/serve-cuda.log || true
  curl -sf --data-binary @$img 127.0.0.1:18081/v1/predict > $W/serve-cpu.json
  curl -sf --data-binary @$img 127.0.0.1:18082/v1/predict > $W/serve-cuda.json
  python3 - $W/serve-cpu.json $W/serve-cuda.json <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
worst = 0.0
def walk(x, y, path):
    global worst
    if isinstance(x, dict):
        for k in x:
            if k not in ("timing_ms", "ms", "total"):
                walk(x[k], y[k], path + "." + k)
    elif isinstance(x, list):
        assert len(x) == len(y), path
        for i, (p, q) in enumerate(zip(x, y)):
            walk(p, q, f"{path}[{i}]")
    elif isinstance(x, float):
        worst = max(worst, abs(x - y))
    else:
        assert x == y, (path, x, y)
walk(a["birads"], b["birads"], "birads")
print(f"serve cuda vs cpu: same labels, max |Δ| {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
}
export -f serve_both
# Point 5 and `birads train` itself: one epoch of the original ConvNeXt at 224 px, batch 64,
# amp, full augmentation, from JPEG-sized images: images/s and the time spent waiting for data.
loader_share() {
  set -e
  $BIRADS synth --out $W/big --seed 5 --train-cls 1600 --train-fea 0 --test-cls 0 --test-fea 0 > /dev/null
  $BIRADS train cls --data $W/big --val-split 0.1 --epochs 2 --batch-size 64 --device $DEVICE --precision amp --engine burn --out $W/big-run
  python3 - $W/big-run <<'PY'
import csv, json, sys
run = sys.argv[1]
n = len(json.load(open(f"{run}/split.json"))["train_images"])
for r in csv.DictReader(open(f"{run}/metrics.csv")):
    ips, wait = float(r["images_per_second"]), float(r["data_wait_seconds"])
    train_s = n / ips
    print(f"epoch {r['epoch']}: {n} images, {ips:.0f} img/s, waiting for data {wait:.2f} s of {train_s:.2f} s ({100 * wait / train_s:.1f} %)")
PY
}
export -f loader_share
export BIRADS W here

# The CUDA headers NVRTC compiles cubecl's kernels with, where cubecl looks for them: without
# include/crt/mma.h every tensor-core matmul fails to compile and autotune quietly goes on
# without them (found with scripts/cuda_dry_run.sh, on pip's wheels).
cuda_headers() {
  local root=${CUDA_PATH:-}
  for d in /usr/local/cuda /opt/cuda /usr; do [ -n "$root" ] || { [ -e $d/include/cuda_runtime.h ] && root=$d; }; done
  echo "CUDA headers: ${root:-none found} (CUDA_PATH=${CUDA_PATH:-unset})"
  for f in include/cuda_runtime.h include/cuda_bf16.h include/mma.h include/crt/mma.h include/cccl; do
    [ -e "$root/$f" ] && echo "  $f" || echo "  $f MISSING"
  done
  ls "$root"/lib64/libnvrtc.so* "$root"/lib/libnvrtc.so* 2> /dev/null | head -3
}
export -f cuda_headers
step 00-machine 30 "nvidia-smi; nproc; free -g; cuda_headers; ${PY:-true} -c 'import torch; print(torch.__version__, torch.version.cuda)'"

# Point 3: outputs and every gradient against the CPU (f32 within 1e-4; amp and bf16 against
# the CPU's own pass in the same precision).
# On a failure, ConvNeXt again with burn's depthwise backward: is the own one at fault?
device_check_f32() {
  $BIRADS bench device-check --device $DEVICE --precision f32 && return 0
  echo "-- again with BIRADS_DEPTHWISE=burn:"
  BIRADS_DEPTHWISE=burn $BIRADS bench device-check --device $DEVICE --precision f32 --models convnext
  return 1
}
export -f device_check_f32

# The first-run cost, paid once into the shared cache so that the timed steps start warm:
# compiling and autotuning both models' amp training step at batch 32 (the warm-up step times).
step 03-warm-amp-b32 200 "$BIRADS bench train --device $DEVICE --precision amp --engine burn --batch 32 --runs 1 --warmup 2 --no-python"
# Point 1: training images/s beside PyTorch AMP, batch 32 and 64, both models, train mode.
step 04-train-amp-b32 150 "$BIRADS bench train --device $DEVICE --precision amp --engine burn --batch 32 --runs 3 --warmup 3 --phases $(pyflag)"
# Point 3 in f32 (device_check_f32 above), after the headline figure.
step 01-device-check-f32 150 device_check_f32
step 04-train-amp-b64 150 "$BIRADS bench train --device $DEVICE --precision amp --engine burn --batch 64 --runs 3 --warmup 3 $(pyflag)"
# Is a step host-bound (burn's CPU work, docs/gpu/README.md "host work per step")? Then batch 8
# takes about as long per step as batch 32.
step 04-train-amp-b8 60 "$BIRADS bench train --device $DEVICE --precision amp --engine burn --batch 8 --runs 3 --warmup 3 --no-python"

# Point 4: inference throughput beside PyTorch (batch 1 and 32), f32 as predict runs it.
step 07-infer-f32 120 "$BIRADS bench infer --device $DEVICE --batches 1,32 --runs 3 $(pyflag)"
step 02-device-check-amp 90 "$BIRADS bench device-check --device $DEVICE --precision amp"
step 08-precision 150 precision_runs
step 09-predict 120 predict_both
step 11-loader 150 loader_share
step 10-serve 90 serve_both

# What bf16 everywhere, fusion, the own depthwise, LayerNorm and BatchNorm backwards and the own
# AdamW update buy, for the note.
step 05-train-bf16-b32 100 "$BIRADS bench train --device $DEVICE --precision bf16 --batch 32 --runs 3 --warmup 3 --no-python"
step 06-train-amp-nofusion-b32 100 "$BIRADS bench train --device $DEVICE --precision amp --batch 32 --runs 3 --warmup 3 --no-fusion --no-python"
step 06-train-amp-burn-depthwise-b32 100 "BIRADS_DEPTHWISE=burn $BIRADS bench train --device $DEVICE --precision amp --engine burn --batch 32 --runs 3 --warmup 3 --no-python"
step 06-train-amp-burn-batchnorm-b32 60 "BIRADS_BATCHNORM=burn $BIRADS bench train --models densenet --device $DEVICE --precision amp --engine burn --batch 32 --runs 3 --warmup 3 --no-python"
step 06-train-amp-burn-bnkernels-b32 60 "BIRADS_BATCHNORM_KERNELS=burn $BIRADS bench train --models densenet --device $DEVICE --precision amp --engine burn --batch 32 --runs 3 --warmup 3 --no-python"
# burn's AdamW operations instead of birads' update kernel (host work: docs/gpu/README.md,
# "host work per step").
step 06-train-amp-burn-adamw-b32 60 "BIRADS_ADAMW_KERNEL=burn $BIRADS bench train --models densenet --device $DEVICE --precision amp --engine burn --batch 32 --runs 3 --warmup 3 --no-python"
# burn's casts of the weights both ways instead of amp's own (docs/gpu/README.md: "The
# weights' casts").
step 06-train-amp-burn-casts-b32 60 "BIRADS_AMP_CASTS=burn $BIRADS bench train --models convnext --device $DEVICE --precision amp --engine burn --batch 32 --runs 3 --warmup 3 --no-python"
step 06-train-amp-burn-dwkernel-b32 60 "BIRADS_DEPTHWISE_KERNEL=burn $BIRADS bench train --models convnext --device $DEVICE --precision amp --engine burn --batch 32 --runs 3 --warmup 3 --no-python"
step 06-train-amp-burn-layernorm-b32 60 "BIRADS_LAYERNORM=burn $BIRADS bench train --models convnext --device $DEVICE --precision amp --engine burn --batch 32 --runs 3 --warmup 3 --no-python"
step 03-device-check-bf16 90 "$BIRADS bench device-check --device $DEVICE --precision bf16"
# The amp check at the benchmark's batch: autotune tunes each shape on its own, and on the
# software driver one of the matmul kernels it may choose computes wrong values
# (docs/gpu/README.md, "A known problem"); batch 4 above does not reach batch 32's choices.
step 02-device-check-amp-b32 150 "$BIRADS bench device-check --device $DEVICE --precision amp --batch 32"
# matmul_steps SUFFIX BINARY:
# - 02-matmuls-b32: every matmul kernel autotune may choose, each on its own, on the linear
#   layers' and 1×1 convolutions' products of a batch-32 step, against an f64 reference (bf16
#   as amp computes them, then f32): is any of them wrong on CUDA, as one is on the software
#   driver?
# - 02-matmuls-small: the same for the small models of the precision step (step 08), whose
#   MyDenseNet has 1×1 convolutions over 24, 72, 120… channels: the pattern of the wrong kernel
#   on the software driver.
matmul_steps() {
  local bin=$2
  step 02-matmuls-b32$1 120 "r=0; for p in bf16 f32; do $bin bench matmuls --device $DEVICE --precision \$p --batch 32 || r=1; done; exit \$r"
  # (f32 on wgpu, which has no bf16: the script's rehearsal without a GPU.)
  local low=bf16
  [ "$DEVICE" = wgpu ] && low=f32
  step 02-matmuls-small$1 60 "$bin bench matmuls --device $DEVICE --precision $low --config $here/configs/precision-fea.toml"
}
matmul_steps "" "$BIRADS"
# The same two with cubek-matmul's bounds along k patched (scripts/cubek_patch.sh), when that
# build was carried as target/gpu/birads-patched.gz (PATCHED=file): wrong kernels above that
# are right here were the over-read of an odd stage.
PATCHED=${PATCHED:-$here/target/gpu/birads-patched.gz}
[ -f "$PATCHED" ] && matmul_steps -patched "$(unpacked "$PATCHED" birads-patched)"
# burn's own GELU backward (the tanh approximation's derivative) on CUDA: expected to break the
# f32 limit on ConvNeXt, as it does on wgpu (2–6e-4); passing would make the own one moot.
step 13-device-check-burn-gelu 60 "! BIRADS_GELU=burn $BIRADS bench device-check --device $DEVICE --precision f32 --models convnext"

# Where a ConvNeXt step's time goes, kernel by kernel (cubecl's profiler; compressed log).
step 12-profile 90 "CUBECL_DEBUG_LOG=$W/cubecl.log CUBECL_DEBUG_OPTION=profile $BIRADS bench train --models convnext --device $DEVICE --precision amp --engine burn --batch 32 --runs 1 --warmup 2 --no-python; gzip -c $W/cubecl.log > $OUT/12-cubecl-profile.log.gz; ls -l $OUT/12-cubecl-profile.log.gz"
# The same for MyDenseNet, whose backward on the software driver is a third copies (284 + 203
# of 1,511 launches around the im2col convolutions autotune picks there): are they on CUDA?
step 12-profile-densenet 90 "CUBECL_DEBUG_LOG=$W/cubecl-dn.log CUBECL_DEBUG_OPTION=profile $BIRADS bench train --models densenet --device $DEVICE --precision amp --engine burn --batch 32 --runs 1 --warmup 2 --no-python; gzip -c $W/cubecl-dn.log > $OUT/12-cubecl-profile-densenet.log.gz; ls -l $OUT/12-cubecl-profile-densenet.log.gz"

# Candidates autotune lost to an error (it goes on without them, silently): one line each.
python3 "$here/scripts/cuda_dry_run/autotune_failures.py" "$CACHE/autotune" > "$OUT/autotune-failures.txt" 2>&1
echo "autotune: $(grep -c 'failed to compile' "$OUT/autotune-failures.txt") candidates failed to compile, $(grep -c 'candidate failed:' "$OUT/autotune-failures.txt") failed otherwise (OUT/autotune-failures.txt)"
# A failed candidate's record holds its whole kernel source: past 40 MB the cache comes back
# compressed (tar xzf it into target/gpu to carry it).
if [ "$(du -sm "$CACHE/autotune" 2> /dev/null | cut -f1)" -le 40 ] 2> /dev/null; then
  cp -r "$CACHE/autotune" "$OUT/" 2> /dev/null && du -sh "$CACHE"/* "$OUT/autotune"
else
  tar czf "$OUT/autotune.tgz" -C "$CACHE" autotune 2> /dev/null && du -sh "$CACHE"/* "$OUT/autotune.tgz"
fi
echo "kernels: $(( $(kernel_count) - kernels_at_start )) compiled on this machine, $kernels_at_start were in the cache at the start"
echo "== done in $(( $(date +%s) - start )) s, $failed step(s) failed; outputs in $OUT"
exit $failed
