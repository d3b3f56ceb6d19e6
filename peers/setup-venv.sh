#!/usr/bin/env bash
# Creates (once) the Python venv with the independent peers we measure
# against: unified-planning (validator), up-fast-downward (Fast Downward 26.6
# binary and translator), pyperplan, torch (CPU). Prints the python path.
# Usage: PYTHON=$(peers/setup-venv.sh [--with-torch])
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${ITERDEPLOY_PEERS_VENV:-$here/../target/peers-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import unified_planning, up_fast_downward, pyperplan" 2>/dev/null; then
  "$venv/bin/pip" install -q unified-planning==1.3.0 up-fast-downward==1.0.0 pyperplan==2.1 >&2
fi
if [ "${1:-}" = "--with-torch" ] && ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "$venv/bin/pip" install -q torch >&2
fi
echo "$venv/bin/python"
