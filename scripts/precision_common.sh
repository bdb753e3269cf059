# Shared by scripts/precision_reference.sh and scripts/gpu_check.sh (sourced).

# The demo's synthetic data (`birads demo`'s synth step, seed 42).
synth_data() {
  "$1" synth --out "$2" --seed 42 --train-cls 2000 --train-fea 1200 --test-cls 200 --test-fea 200 \
    --min-side 128 --max-side 176 --lesion-scale 1.8 > /dev/null
}

# One digest of every file of the data (names and contents), to know both sides trained on
# the same images.
data_digest() {
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}
