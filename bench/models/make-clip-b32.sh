#!/usr/bin/env bash
# Builds bench/models/clip-b32-random/: a CLIP ViT-B/32 with random weights in ONNX plus the
# real CLIP tokenizer files, for timing embedding throughput only (see README.md here).
#
# Usage: bench/models/make-clip-b32.sh [out_dir]
# Installs Debian's python3-torch and python3-onnx if they are missing (needs root or sudo).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/clip-b32-random}"
tokenizer="${CLIP_TOKENIZER_DIR:-$here/../../../shared/models/clip-vit-b32-tokenizer}"
# Debian's interpreter, the one its python3-* packages install into (a pyenv or venv
# python3 earlier on PATH would not see them).
python=/usr/bin/python3

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! "$python" -c 'import torch, onnx' 2>/dev/null; then
  echo "installing python3-torch and python3-onnx (Debian packages)..." >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-onnx >&2
fi

for f in vocab.json merges.txt; do
  if [ ! -f "$tokenizer/$f" ]; then
    echo "missing $tokenizer/$f (set CLIP_TOKENIZER_DIR to the CLIP ViT-B/32 tokenizer files)" >&2
    exit 1
  fi
done

"$python" "$here/make-clip-b32.py" "$out"

for f in vocab.json merges.txt preprocessor_config.json; do
  # install, not cp: the shared copies are read-only and a rerun must overwrite.
  if [ -f "$tokenizer/$f" ]; then install -m 0644 "$tokenizer/$f" "$out/$f"; fi
done

echo "wrote $out:" >&2
ls -l "$out" >&2
