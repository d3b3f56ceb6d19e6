#!/usr/bin/env bash
# Creates (once) the Python venv with the independent peers we measure
# against: unified-planning (validator), up-fast-downward (Fast Downward 26.6
# binary and translator), pyperplan, torch (CPU); with --with-llm also the
# pretrained model's peers: llama-cpp-python (built from source: about 10
# minutes on 2 cores), transformers, peft and gguf. Prints the python path.
# Usage: PYTHON=$(peers/setup-venv.sh [--with-torch | --with-llm])
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${ITERDEPLOY_PEERS_VENV:-$here/../target/peers-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import unified_planning, up_fast_downward, pyperplan" 2>/dev/null; then
  "$venv/bin/pip" install -q unified-planning==1.3.0 up-fast-downward==1.0.0 pyperplan==2.1 >&2
fi
case "${1:-}" in --with-torch | --with-llm)
  if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    "$venv/bin/pip" install -q torch >&2
  fi
esac
if [ "${1:-}" = "--with-llm" ] && ! "$venv/bin/python" -c "import llama_cpp, transformers, peft, gguf" 2>/dev/null; then
  "$venv/bin/pip" install -q transformers==5.24.0 peft==0.21.2 gguf==0.19.0 >&2
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/pip" install -q llama-cpp-python==0.3.36 >&2
fi
echo "$venv/bin/python"
