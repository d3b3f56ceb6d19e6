#!/usr/bin/env bash
# Replays the device calls of the GPU check on this machine, without a GPU
# (issue 30), so that the only unknown left on a lent machine is the GPU.
#
#   gpu/rehearse-device.sh [WORK]
#
# Needs gpu/build-cuda.sh and gpu/pack-payload.sh run first. For each part
# in gpu/payload, in order, one "call":
# - a copy of the working tree as the device tool sends it (tracked files
#   and untracked files git does not ignore) plus the carried paths,
#   gpu/payload/parts.sha256 and that part; its size is checked against a
#   call's 64 MiB;
# - `bash gpu/device-check.sh` in that copy, with its own empty OUT, an
#   empty HOME (no cached model), the same STASH for every call (the warm
#   machine's /tmp), DEVICE=cpu, the
#   CUDA libraries from target/cuda-venv found the way the device's are
#   (PYTHON's site-packages), and target/cuda-stub standing in for the
#   driver (it reports no device, so the cuda binary runs on the CPU).
# Then it lists what each call's OUT would send back, against the limits
# (8 files, 16 MiB each).
#
# DEADLINE_S, DEVICE_LIMIT_S, FULL_OVER_SMOKE and RUN_FLAGS pass through.
# With the device's defaults, on 2 CPU cores `bench device` (both of its
# sides on the CPU here) stops at its limit and no version of the full
# spec fits. To rehearse every step to its end,
#   DEADLINE_S=2400 DEVICE_LIMIT_S=900 FULL_OVER_SMOKE=25 RUN_FLAGS=--smoke \
#     gpu/rehearse-device.sh
# lets the bench finish and, with a smoke run of about 80 s, chooses the
# reduced spec (1 seed x 5 generations), run at smoke size.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/iterdeploy-rehearsal.XXXXXX")}"
limit=$((64 * 1024 * 1024))
[ -f "$root/gpu/payload/parts.sha256" ] || {
  echo "rehearse: no gpu/payload (run gpu/pack-payload.sh)" >&2
  exit 1
}
rm -rf "$work/stash"
mkdir -p "$work"
n=0
status=0
while read -r _ part; do
  n=$((n + 1))
  repo="$work/call-$n/repo"
  rm -rf "$work/call-$n"
  mkdir -p "$repo/gpu/payload"
  (cd "$root" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$repo"
  cp "$root/gpu/payload/parts.sha256" "$root/gpu/payload/$part" "$repo/gpu/payload/"
  size="$(du -sb "$repo" | cut -f1)"
  echo "call $n: carries $part; the tree travels as $size bytes (limit $limit)" >&2
  if [ "$size" -gt "$limit" ]; then
    echo "call $n: over the 64 MiB a call may carry" >&2
    exit 1
  fi
  rc=0
  # An empty HOME: nothing of this machine's caches (the model's above
  # all) may stand in for what the payload must bring.
  mkdir -p "$work/home"
  (cd "$repo" && HOME="$work/home" OUT="$work/call-$n/out" STASH="$work/stash" DEVICE=cpu \
    PYTHON="$root/target/cuda-venv/bin/python" EXTRA_LIBS="$root/target/cuda-stub" \
    bash gpu/device-check.sh < /dev/null) || rc=$?
  echo "call $n: exit $rc" >&2
  files="$(find "$work/call-$n/out" -type f | wc -l)"
  big="$(find "$work/call-$n/out" -type f -size +16M | wc -l)"
  echo "call $n: OUT holds $files file(s) (limit 8), $big over 16 MiB:" >&2
  (cd "$work/call-$n/out" && ls -la) >&2
  if [ "$files" -gt 8 ] || [ "$big" -gt 0 ]; then
    echo "call $n: OUT is over what comes back" >&2
    status=1
  fi
done < "$root/gpu/payload/parts.sha256"
echo "rehearsal in $work" >&2
exit "$status"
