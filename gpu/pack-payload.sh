#!/usr/bin/env bash
# Packs what the GPU check needs on a device machine that has no Rust and
# no network, in parts small enough for one device call each (issue 30).
#
#   gpu/pack-payload.sh [BINARY]
#
# BINARY defaults to the cuda build (target/cuda/release/iterdeploy, from
# gpu/build-cuda.sh). The payload is a tar of
#   iterdeploy.xz                      the binary, stripped and xz-compressed
#   SmolLM2-135M-Instruct.Q4_1.gguf    the model (peers/fetch-model.sh)
#   SHA256SUMS                         of the binary (uncompressed) and model
# split into gpu/payload/part-00, part-01, ... of at most PART_BYTES each
# (default 58 MiB: a device call carries the working tree and its carried
# paths, 64 MiB in all, and the tree is about 2-3 MiB). The model alone is
# 94 MiB and compresses by 9% at most (zstd -19), so it cannot travel in
# one call. gpu/payload/parts.sha256 lists every part with its sha256, in
# order; it is small and travels on every call.
#
# The device side is gpu/device-check.sh: each call stashes the parts it
# carries, and the call that completes the set assembles, checks and runs.
# The calls to make are printed at the end. gpu/rehearse-device.sh replays
# them on this machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="${1:-$root/target/cuda/release/iterdeploy}"
part_bytes="${PART_BYTES:-$((58 * 1024 * 1024))}"
if [ ! -x "$bin" ]; then
  echo "pack-payload: no binary at $bin (run gpu/build-cuda.sh first)" >&2
  exit 1
fi
model="$(bash "$root/peers/fetch-model.sh")"
dest="$root/gpu/payload"
stage="$(mktemp -d "${TMPDIR:-/tmp}/iterdeploy-payload.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

strip -o "$stage/iterdeploy" "$bin"
(cd "$stage" && sha256sum iterdeploy > SHA256SUMS)
(cd "$(dirname "$model")" && sha256sum "$(basename "$model")") >> "$stage/SHA256SUMS"
xz -T0 -6 -c "$stage/iterdeploy" > "$stage/iterdeploy.xz"
ln -s "$model" "$stage/$(basename "$model")"
echo "binary: $(stat -c %s "$stage/iterdeploy") bytes stripped, $(stat -c %s "$stage/iterdeploy.xz") xz" >&2

rm -rf "$dest"
mkdir -p "$dest"
tar -C "$stage" -chf - iterdeploy.xz "$(basename "$model")" SHA256SUMS |
  split -b "$part_bytes" -d -a 2 - "$dest/part-"
(cd "$dest" && sha256sum part-* > parts.sha256)
n="$(wc -l < "$dest/parts.sha256")"
echo "payload: $n part(s) in $dest" >&2
cat "$dest/parts.sha256" >&2
echo >&2
echo "Device calls, back to back (a machine stays warm 30 s after a call):" >&2
i=0
for part in "$dest"/part-*; do
  i=$((i + 1))
  p="gpu/payload/$(basename "$part")"
  echo "  $i. run(command='bash gpu/device-check.sh', carry=['gpu/payload/parts.sha256', '$p'])" >&2
done
