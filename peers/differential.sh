#!/usr/bin/env bash
# Differential check of iterdeploy's validator against unified-planning's
# sequential_plan_validator on corrupted copies of the shared reference plans
# (tests/differential.rs). Installs the peers' venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERDEPLOY_PEER_PYTHON="$(peers/setup-venv.sh)"
export ITERDEPLOY_PEER_PYTHON
cargo test --release --test main -- --ignored --exact differential::differential_against_unified_planning --nocapture
