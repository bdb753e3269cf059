# Sourced by scripts/test.sh and scripts/cubecl_check.sh: Mesa's software Vulkan driver
# (lavapipe) for burn's wgpu backend, installed when missing, and the environment that makes
# wgpu use it and only it (a real GPU's driver, where there is one, is not what they check).
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  echo "== installing Mesa's software Vulkan driver (lavapipe)"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
# wgpu's Vulkan loader asks for a runtime folder; a root shell may have none.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
export VK_ICD_FILENAMES
VK_ICD_FILENAMES=$(ls /usr/share/vulkan/icd.d/lvp_icd*.json | head -1)
