#!/usr/bin/env bash
# Writes the starting corpora of the fuzz targets into seeds/<target>/ (committed; the
# fuzzer's own grown corpora go to corpus/, which is not).
set -euo pipefail
cd "$(dirname "$0")"
rm -rf seeds && mkdir -p seeds/labels seeds/manifest seeds/decode_preprocess seeds/dicom
printf '2 0.5 0.5 0.3 0.2\n' > seeds/labels/box
printf '1\n' > seeds/labels/class_only
printf '3 0.4 0.6 0.2 0.2\n3 0.1 0.1 0.05 0.05\n' > seeds/labels/two_lines
printf '\xef\xbb\xbf0 0.5 0.5 1.0004 0.2\r\n' > seeds/labels/bom_crlf
printf 'image,birads,boundary,calcification,direction,shape,cx,cy,w,h,group\na.jpg,4A,1,0,1,0,0.5,0.5,0.2,0.1,p1\nb.png,2,0,0,0,0,,,,,p2\n' > seeds/manifest/full.csv
printf 'path,label,bbox_x,bbox_y,bbox_w,bbox_h\nx/y.jpg,3,10,20,30,40\n' > seeds/manifest/pixels.csv
printf 'ID,Pathology,BIRADS,Histology,Device,Width,Height,Side,BBOX\nbus_0001-l,benign,4,x,y,100,80,left,"[1, 2, 30, 40]"\n' > seeds/manifest/busbra.csv
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run -q --manifest-path ../Cargo.toml -p birads --example bad_corpus -- "$tmp/c" > /dev/null
for f in good_1.jpg cmyk.jpg exif_rotated.jpg grey_alpha.png sixteen_bit.png one_pixel.png truncated.jpg bomb.png; do
  cp "$tmp/c/flat/$f" seeds/decode_preprocess/
done
cargo run -q --manifest-path ../Cargo.toml -p birads -- synth --out "$tmp/s" --train-cls 6 --train-fea 0 --test-cls 0 --test-fea 0 --min-side 64 --max-side 96 --seed 5 > /dev/null
# The DICOM target adds the preamble and `DICM` itself: its seeds start after them.
for f in "$tmp"/c/flat/*.dcm; do
  tail -c +133 "$f" > "seeds/dicom/$(basename "$f")"
done
cp "$tmp/c/flat/scan.dcm" seeds/decode_preprocess/
find "$tmp/s" -name '*.jpg' -o -name '*.png' | head -4 | while read -r f; do cp "$f" seeds/decode_preprocess/; done
ls -la seeds/*
