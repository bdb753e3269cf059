#!/usr/bin/env bash
# The GPU training code paths without a GPU (issue #15, point 6): birads-model's
# `tests/cubecl.rs` on burn's wgpu backend, which runs the same burn-cubecl kernels,
# burn-fusion and autotune as burn's CUDA backend, on Mesa's software Vulkan driver
# (lavapipe). Checks the own depthwise backward and one forward and backward of both models
# against the CPU, before device time is spent on them.
#
#   bash scripts/cubecl_check.sh          # installs mesa-vulkan-drivers when missing
#
# Not part of CI: the wgpu build adds about 10 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  echo "installing Mesa's software Vulkan driver (lavapipe)"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get install -y -q mesa-vulkan-drivers libvulkan1 >/dev/null
fi
# Only the software driver: a real GPU's driver, where there is one, is not what this checks.
export VK_ICD_FILENAMES
VK_ICD_FILENAMES=$(ls /usr/share/vulkan/icd.d/lvp_icd*.json | head -1)
cargo test -p birads-model --features wgpu --test cubecl -- --test-threads 1 "$@"
