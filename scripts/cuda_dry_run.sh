#!/usr/bin/env bash
# The CUDA paths of birads without a GPU: does NVRTC compile every kernel they launch, does
# ptxas assemble each for the GPU, does every launch fit the device? (Issue #15: a device is
# lent to few sessions, 15 minutes each; a kernel that does not compile there costs one of them.)
#
#   CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda -p birads
#   bash scripts/cuda_dry_run.sh [target/release/birads] [STEP…]
#
# How: birads runs against a stand-in for NVIDIA's driver library (cuda_dry_run/fake_libcuda.c:
# device memory is host memory, a launch checks its grid, block and shared memory against an
# H100's limits and runs nothing) with NVIDIA's real NVRTC and headers, from pip's wheels
# (nvidia-cuda-nvrtc, -runtime, -crt, -cccl and -nvcc 13.x; downloaded once into
# target/cuda-dry, ~120 MB). All five are needed: without crt/mma.h (-crt) every tensor-core
# matmul fails to compile, and autotune quietly goes on with the others.
# Every kernel a step launches is compiled by NVRTC for sm_90a as on the device, cubecl's own
# fused and autotuned kernels and every autotune candidate included; each PTX module is then
# assembled by ptxas (FAKE_CUDA_SM=90 by default: H100/H200).
#
# What it cannot show: values. No kernel runs, so the numbers the steps print are meaningless,
# and device-check and matmuls fail their comparisons; a step fails here on a compilation error
# (in its log, or among the candidates autotune tried: cuda_dry_run/autotune_failures.py), a
# module ptxas rejects, or birads ending with an error other than those comparisons. What NVRTC
# and ptxas accept can still compute wrong values on the GPU: that is scripts/gpu_check.sh's part.
# It takes long: train-amp alone compiles 1,613 kernels, 27 minutes on 2 cores.
#
# Steps (all by default, in this order): train-amp, device-check-amp, train-bf16,
# device-check-bf16, device-check-f32, matmuls-bf16, predict, serve, infer, train-f32,
# train-nofusion, matmuls-f32, burn-ops (amp with each of birads' own operations switched off).
# Two more, for the device, not among the default steps:
#   gpu-check  scripts/gpu_check.sh's own steps, as the device will run them (ONLY= as there,
#              time limits ×TIME_SCALE, default 30), into the kernel cache target/cuda-dry/kernels
#   kernels    that cache assembled for the GPU (cuda_dry_run/assemble_kernels.py, ptxas) and
#              packed as target/gpu/kernels-sm_90a.tar.xz for gpu_check.sh: the device then
#              neither compiles nor assembles the kernels it finds there. Run both on the
#              binary that will be carried (stripped): the archive names it by its SHA-256.
#   gpu-check-ready  gpu_check.sh's steps again (ONLY=), from that archive and an empty
#              autotune cache, as on the device: fails if more than READY_MAX (default 50)
#              kernels had to be compiled. A few are: some of cubek's reduce kernels come out
#              different from one process to the next (10-15 in the first step, stop 47).
# Output: target/cuda-dry/out/STEP.txt and one line per step; the exit status is the number of
# failed steps.
#
# Tensor maps and launches the stand-in refuses are counted, not failed: autotune tries
# candidates a device refuses too (some of cubek's TMA matmuls ask for boxes larger than 256)
# and goes on without them; a refusal anywhere else ends birads with an error, which fails
# the step.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BIRADS=$(realpath "${1:-$here/target/release/birads}")
shift || true
STEPS=${*:-train-amp device-check-amp train-bf16 device-check-bf16 device-check-f32 matmuls-bf16 predict serve infer train-f32 train-nofusion matmuls-f32 burn-ops}
D=${DRY:-$here/target/cuda-dry}
mkdir -p "$D/wheels" "$D/lib" "$D/out"

# NVIDIA's compiler, assembler and headers (no driver: the stand-in is the driver).
CUDA=$D/cuda/nvidia/cu13
if [ ! -x "$CUDA/bin/ptxas" ] || [ ! -f "$CUDA/lib/libnvrtc.so.13" ] ||
  [ ! -f "$CUDA/include/crt/mma.h" ] || [ ! -d "$CUDA/include/cccl" ]; then
  echo "== fetching NVRTC, ptxas and CUDA's headers (pip wheels, 13.x)"
  python3 -m pip download -q --no-deps -d "$D/wheels" "nvidia-cuda-nvrtc==13.*" \
    "nvidia-cuda-runtime==13.*" "nvidia-cuda-crt==13.*" "nvidia-cuda-cccl==13.*" \
    "nvidia-cuda-nvcc==13.*" || exit 1
  for w in "$D"/wheels/*.whl; do python3 -m zipfile -e "$w" "$D/cuda" || exit 1; done
  chmod +x "$CUDA"/bin/*
fi
gcc -O1 -Wall -Wextra -Werror -shared -fPIC -I"$CUDA/include" \
  -o "$D/lib/libcuda.so.1" "$here/scripts/cuda_dry_run/fake_libcuda.c" || exit 1
ln -sf libnvrtc.so.13 "$CUDA/lib/libnvrtc.so"
# The stand-in refuses what a device refuses (cuda_dry_run/self_test.c), and ptxas refuses a
# broken module: else a step's "ok" would mean nothing.
gcc -O1 -Wall -Wextra -Werror -I"$CUDA/include" -o "$D/self_test" \
  "$here/scripts/cuda_dry_run/self_test.c" -L"$D/lib" -l:libcuda.so.1 || exit 1
LD_LIBRARY_PATH=$D/lib "$D/self_test" > "$D/out/self-test.txt" 2>&1 || {
  cat "$D/out/self-test.txt"
  exit 1
}
printf '.version 8.0\n.target sm_90a\n.address_size 64\n.entry k() { bad; }\n' > "$D/broken.ptx"
if "$CUDA/bin/ptxas" -arch=sm_90a -o /dev/null "$D/broken.ptx" 2> /dev/null; then
  echo "ptxas took a broken module"
  exit 1
fi
export CUDA_PATH=$CUDA LD_LIBRARY_PATH=$D/lib:$CUDA/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FAKE_CUDA_SM=${FAKE_CUDA_SM:-90}
# The device's architecture as cubecl names it to NVRTC (the arch-specific target from sm_90 on).
ARCH=sm_${FAKE_CUDA_SM}
[ "$FAKE_CUDA_SM" -ge 90 ] && ARCH=${ARCH}a

# Each step runs in a folder of its own whose cubecl.toml names this run's caches: cubecl's
# default autotune cache is the user's cache folder, where choices made in an earlier run (on
# this fake device, by meaningless timings) would spare autotune its trials, so the candidates
# would be neither tried nor compiled. Within a run each shape and type is tuned once, and a
# kernel an earlier step compiled is taken from the run's kernel cache.
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
data() { [ -d "$W/synth" ] || "$BIRADS" synth --out "$W/synth" --seed 3 --train-cls 8 --train-fea 8 --test-cls 8 --test-fea 8 > /dev/null; }
# The shapes of gpu_check.sh's benchmark (batch 32 at 224 px): fusion and autotune choose kernels per shape.
train() { "$BIRADS" bench train --device cuda --engine burn --batch 32 --runs 1 --warmup 1 --no-python "$@"; }
# Commands whose exit status reports values (which are meaningless here) run through this.
values() { "$@" || echo "(exit $? from a comparison of values: expected without a GPU)"; }
run_step() {
  case $1 in
    train-f32) train --precision f32 ;;
    train-amp) train --precision amp ;;
    train-bf16) train --precision bf16 ;;
    train-nofusion) train --precision amp --no-fusion ;;
    burn-ops)
      for v in DEPTHWISE DEPTHWISE_KERNEL BATCHNORM BATCHNORM_KERNELS LAYERNORM LAYERNORM_KERNELS ADAMW_KERNEL AMP_CASTS GELU; do
        echo "-- BIRADS_$v=burn"
        (export "BIRADS_$v=burn" && train --precision amp) || return 1
      done ;;
    device-check-f32) values "$BIRADS" bench device-check --device cuda --precision f32 ;;
    device-check-amp) values "$BIRADS" bench device-check --device cuda --precision amp ;;
    device-check-bf16) values "$BIRADS" bench device-check --device cuda --precision bf16 ;;
    matmuls-bf16) values "$BIRADS" bench matmuls --device cuda --precision bf16 --batch 32 ;;
    matmuls-f32) values "$BIRADS" bench matmuls --device cuda --precision f32 --batch 32 ;;
    infer) "$BIRADS" bench infer --device cuda --batches 1,32 --runs 1 --no-python ;;
    predict) data && "$BIRADS" predict --input "$W/synth/testA" --output "$W/pred" --device cuda --batch-size 4 --probabilities ;;
    serve)
      data
      "$BIRADS" serve --addr 127.0.0.1:18093 --device cuda & local pid=$!
      local ok=1
      # It listens once it has compiled and tuned for every batch size it forms: minutes here.
      for _ in $(seq 1200); do curl -sf 127.0.0.1:18093/health > /dev/null && { ok=0; break; }; sleep 1; done
      [ $ok = 0 ] && curl -sf --data-binary @"$(ls "$W"/synth/testA/cla/* | head -1)" 127.0.0.1:18093/v1/predict > /dev/null || ok=1
      kill $pid; wait $pid 2> /dev/null
      return $ok ;;
    gpu-check)
      # Its comparisons of values fail here (its exit status counts them), so only what
      # compiled is judged; every step's whole output is copied into this step's log. The
      # cache is this binary's (a run in parts, with ONLY=, adds to it); step kernels
      # assembles it, so its modules are not assembled here.
      local sha
      sha=$(sha256sum < "$BIRADS" | cut -d' ' -f1)
      [ "$(cat "$D/kernels/binary_sha256" 2> /dev/null)" = "$sha" ] || rm -rf "$D/kernels"
      mkdir -p "$D/kernels" && echo "$sha" > "$D/kernels/binary_sha256"
      (unset FAKE_CUDA_PTX_DIR
        OUT=$D/out/gpu-check KERNEL_CACHE=$D/kernels KERNELS=none TIME_SCALE=${TIME_SCALE:-30} \
          values bash "$here/scripts/gpu_check.sh" "$BIRADS")
      tail -n +1 "$D"/out/gpu-check/*.txt ;;
    kernels) pack_kernels ;;
    gpu-check-ready)
      # (Its cache stays in target/cuda-dry/ready-cache: the kernels compiled anyway are the
      # records after the archive's in its chunk.)
      rm -rf "$D/ready-cache"
      (unset FAKE_CUDA_PTX_DIR
        OUT=$D/out/gpu-check-ready KERNEL_CACHE=$D/ready-cache TIME_SCALE=${TIME_SCALE:-30} \
          KERNELS=$here/target/gpu/kernels-$ARCH.tar.xz values bash "$here/scripts/gpu_check.sh" "$BIRADS") |
        tee "$W/ready.txt"
      local compiled
      compiled=$(sed -n 's/^kernels: \([0-9]*\) compiled on this machine.*/\1/p' "$W/ready.txt")
      python3 "$here/scripts/cuda_dry_run/assemble_kernels.py" --list-ptx "$D/ready-cache" | sort | uniq -c
      [ -n "$compiled" ] && [ "$compiled" -le "${READY_MAX:-50}" ] ;;
    *) echo "unknown step $1"; return 2 ;;
  esac
}

# The kernel cache of step gpu-check, assembled for the device's architecture and packed with
# what gpu_check.sh checks before it uses it: the binary it was made with, the assembler's CUDA.
pack_kernels() {
  python3 -c 'import cbor2' 2> /dev/null || export PYTHONPATH=$D/py
  python3 -c 'import cbor2' 2> /dev/null || python3 -m pip install -q --target "$D/py" cbor2 || return 1
  # (The binary is the one that filled the cache, as step gpu-check recorded it.)
  [ -f "$D/kernels/binary_sha256" ] || { echo "no kernel cache: run step gpu-check first"; return 1; }
  python3 "$here/scripts/cuda_dry_run/assemble_kernels.py" "$D/kernels" --ptxas "$CUDA/bin/ptxas" --arch "$ARCH" || return 1
  {
    echo "binary_sha256 $(cat "$D/kernels/binary_sha256")"
    echo "ptxas_major $("$CUDA/bin/ptxas" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
    echo "arch $ARCH"
  } > "$D/kernels/kernels-for.txt"
  cat "$D/kernels/kernels-for.txt"
  mkdir -p "$here/target/gpu"
  tar cJf "$here/target/gpu/kernels-$ARCH.tar.xz" -C "$D/kernels" cuda kernels-for.txt || return 1
  ls -l "$here/target/gpu/kernels-$ARCH.tar.xz"
}

failed=0
for s in $STEPS; do
  ptx=$D/ptx/$s
  rm -rf "$ptx" && mkdir -p "$ptx"
  t0=$(date +%s)
  mkdir -p "$W/$s" && cd "$W/$s" || exit 1
  printf '[autotune]\ncache = { file = "%s" }\n[compilation]\ncache = { file = "%s" }\n' \
    "$W/autotune" "$W/kernels" > cubecl.toml
  FAKE_CUDA_PTX_DIR=$ptx run_step "$s" > "$D/out/$s.txt" 2>&1
  rc=$?
  cd "$W" || exit 1
  # ptxas on each module NVRTC made, for the device's architecture ($ARCH).
  modules=$(find "$ptx" -name '*.ptx' | wc -l)
  # (A module an earlier step of this run assembled already is left out.)
  for f in "$ptx"/*.ptx; do
    [ -e "$f" ] || continue
    h=$(sha1sum < "$f" | cut -c1-40)
    if [ -e "$W/assembled/$h" ]; then rm "$f"; else mkdir -p "$W/assembled" && touch "$W/assembled/$h"; fi
  done
  bad_ptx=$(find "$ptx" -name '*.ptx' -print0 | xargs -0 -r -P "$(nproc)" -I{} sh -c \
    "'$CUDA/bin/ptxas' -arch=$ARCH -o /dev/null {} > {}.log 2>&1 || echo {}" | wc -l)
  # Autotune records a candidate that failed (to compile, or to launch) in its cache and goes on
  # without it; those records say which, and why. The cache is the run's: only what this step
  # added is its own (compared without the counts of keys, which grow from step to step).
  python3 "$here/scripts/cuda_dry_run/autotune_failures.py" "$W/autotune" > "$W/failures-now.txt"
  sed 's/ ([0-9]* keys)//' "$W/failures-before.txt" 2> /dev/null > "$W/failures-seen.txt"
  while IFS= read -r line; do
    grep -qxF "$(sed 's/ ([0-9]* keys)//' <<< "$line")" "$W/failures-seen.txt" || echo "$line"
  done < "$W/failures-now.txt" > "$D/out/$s-autotune.txt"
  mv "$W/failures-now.txt" "$W/failures-before.txt"
  # (gpu_check.sh's own count of them, "autotune: N candidates failed to compile", is not one.)
  problems=$(cat "$D/out/$s.txt" "$D/out/$s-autotune.txt" | grep -v "^autotune: [0-9]* candidates" |
    grep -c -E "failed to compile|Compilation Error|panicked at|error while loading|^Error")
  verdict=ok
  if [ $rc -ne 0 ] || [ "$bad_ptx" -ne 0 ] || [ "$problems" -ne 0 ]; then verdict=FAILED; failed=$((failed + 1)); fi
  printf '%-18s %-6s exit %d, %4d kernels compiled, %d rejected by ptxas, %d errors in the log, %4d s\n' \
    "$s" "$verdict" $rc "$modules" "$bad_ptx" "$problems" $(( $(date +%s) - t0 ))
  if [ $verdict = FAILED ]; then
    grep -m 5 -E -A 8 "Compilation Error|panicked at|error while loading|^Error" "$D/out/$s.txt" | head -40
    grep "failed to compile" "$D/out/$s-autotune.txt" | head -10
    find "$ptx" -name '*.ptx.log' -size +0 | head -3 | xargs -r head -5
  fi
  grep "refused:" "$D/out/$s.txt" | sed 's/^fake libcuda: /(counted, not failed) /' | sort | uniq -c | sort -rn | head -5
  grep "candidate failed:" "$D/out/$s-autotune.txt" | sed 's/^/(counted, not failed) /' | head -5
  grep "fake libcuda:" "$D/out/$s.txt" | tail -1
done
exit $failed
