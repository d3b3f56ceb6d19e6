#!/usr/bin/env bash
# The GPU check on a lent device machine (issue 30): no Rust, no network,
# and each call carries at most 64 MiB. Nothing is built there: the cuda
# binary and the model arrive in parts made by gpu/pack-payload.sh.
#
#   bash gpu/device-check.sh        (in the repository root, on the device)
#
# Each call carries gpu/payload/parts.sha256 and one or more parts. This
# script
# 1. stashes every carried part whose sha256 matches into $STASH (default
#    /tmp/iterdeploy-gpu), which outlives the call while the machine stays
#    warm; if parts are still missing it says which and exits 0;
# 2. once every part is there: joins them, unpacks, and checks the binary
#    and the model against the SHA256SUMS packed beside them;
# 3. finds the CUDA libraries the binary links (cuBLAS, cuBLASLt, cuRAND,
#    the CUDA runtime; `ldd` here lists no others, NVRTC included) among
#    python3's site-packages, where the machine's PyTorch installs them,
#    or /usr/local/cuda; libcuda.so.1 is the driver's. `ldd` of the binary
#    goes into the report;
# 4. runs, each step logged, timed and allowed to fail without stopping
#    the next:
#    - nvidia-smi;
#    - `iterdeploy bench device --device $DEVICE`: CPU-vs-GPU agreement
#      verdicts and tokens/s on both devices;
#    - the pretrained spec's smoke run on the GPU;
#    - the pretrained spec at full size (3 seeds, both arms, 5
#      generations) if its estimate fits the time left, else the largest
#      reduced version that does, with its own id saying so. The estimate
#      is the smoke run's seconds here times FULL_OVER_SMOKE, the ratio of
#      the full run to the smoke run measured on the CPU (5093 s / 107 s
#      on the 2-core AMD EPYC, README). A GPU's fixed costs (loading,
#      kernel compilation) weigh more in the smoke run than in the full
#      one, so the estimate errs long. Every run is also under `timeout`.
# 5. writes to $OUT (at most 8 files come back): report.md, device.md,
#    results.csv and summary.md of the largest run, and run.tar.gz,
#    smoke.tar.gz and logs.tar.gz with everything else.
#
# Environment: DEVICE (cuda; `cpu` rehearses on a machine without a GPU,
# see gpu/rehearse-device.sh), DEADLINE_S (seconds this call may use in
# all, default 450: a call given timeout_s 480 keeps its files), STASH,
# PYTHON (whose site-packages hold the CUDA libraries; default python3),
# EXTRA_LIBS (more library folders, first on the loader's path; the
# rehearsal's stand-in driver), DEVICE_LIMIT_S (the bench step's limit;
# on 2 CPU cores, where both of its sides run on the CPU, it needs about
# 10 minutes), RUN_FLAGS (extra flags of the full or
# reduced run: the rehearsal passes --smoke so that branch, the reduced
# spec included, runs end to end in minutes on a CPU).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
t0=$SECONDS
out="${OUT:-$root/gpu-out/$(date -u +%Y%m%dT%H%M%SZ)}"
stash="${STASH:-/tmp/iterdeploy-gpu}"
device="${DEVICE:-cuda}"
deadline="${DEADLINE_S:-450}"
python="${PYTHON:-python3}"
full_over_smoke="${FULL_OVER_SMOKE:-47.6}"
spec_file="$root/experiments/pretrained-blocksworld.toml"
mkdir -p "$out" "$stash/parts" "$stash/logs" "$stash/specs" || exit 1
report="$out/report.md"
say() { echo "$*" | tee -a "$report" >&2; }
left() { echo $((deadline - (SECONDS - t0))); }

say "# GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), device $device, deadline ${deadline}s"
say ""

# 1. Stash the carried parts.
manifest="$root/gpu/payload/parts.sha256"
if [ ! -f "$manifest" ]; then
  say "no $manifest: carry gpu/payload/parts.sha256 with each part (gpu/pack-payload.sh)"
  exit 1
fi
cp "$manifest" "$stash/parts.sha256"
missing=()
while read -r sum name; do
  if [ -f "$root/gpu/payload/$name" ] && [ ! -f "$stash/parts/$name" ]; then
    if [ "$(sha256sum "$root/gpu/payload/$name" | cut -d' ' -f1)" = "$sum" ]; then
      cp "$root/gpu/payload/$name" "$stash/parts/$name.tmp" && mv "$stash/parts/$name.tmp" "$stash/parts/$name"
      say "- stashed $name"
    else
      say "- $name arrived with a wrong sha256: not kept"
    fi
  fi
  [ -f "$stash/parts/$name" ] || missing+=("$name")
done < "$stash/parts.sha256"
if [ "${#missing[@]}" -gt 0 ]; then
  say "- still missing: ${missing[*]}; carry them on the next call, while the machine is warm"
  exit 0
fi

# 2. Join, unpack, check.
pay="$stash/unpacked"
if [ ! -f "$pay/.checked" ]; then
  rm -rf "$pay"
  mkdir -p "$pay"
  (cd "$stash/parts" && sha256sum -c --quiet "$stash/parts.sha256") || {
    say "a stashed part no longer matches its sha256"
    exit 1
  }
  while read -r _ name; do cat "$stash/parts/$name"; done < "$stash/parts.sha256" | tar -xf - -C "$pay" || {
    say "the joined parts are not a tar archive"
    exit 1
  }
  if command -v xz > /dev/null; then
    xz -dc "$pay/iterdeploy.xz" > "$pay/iterdeploy"
  else
    "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$pay/iterdeploy.xz" "$pay/iterdeploy"
  fi
  chmod +x "$pay/iterdeploy"
  (cd "$pay" && sha256sum -c --quiet SHA256SUMS) || {
    say "the binary or the model does not match SHA256SUMS"
    exit 1
  }
  touch "$pay/.checked"
fi
bin="$pay/iterdeploy"
model="$(ls "$pay"/*.gguf | head -1)"
# The pretrained spec names no model file: it takes the cached one, which
# on this machine is the payload's.
export ITERDEPLOY_MODELS="$pay"
say "- payload checked: $(sha256sum "$bin" | cut -c1-16)… iterdeploy, $(basename "$model")"

# 3. The CUDA libraries.
libdirs=()
search=()
while read -r d; do [ -d "$d" ] && search+=("$d"); done < <("$python" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2> /dev/null)
search+=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13; do
  hit=""
  for d in "${search[@]}"; do
    [ -d "$d" ] || continue
    # NVIDIA's wheels put them under nvidia/ (nvidia/cu13/lib for CUDA 13).
    [ -d "$d/nvidia" ] && d="$d/nvidia"
    hit="$(find -L "$d" -maxdepth 5 -name "$lib" 2> /dev/null | head -1)"
    [ -n "$hit" ] && break
  done
  if [ -n "$hit" ]; then
    libdirs+=("$(dirname "$hit")")
  else
    say "- $lib: not found under ${search[*]}"
  fi
done
path="$(printf '%s\n' "${EXTRA_LIBS:-}" "${libdirs[@]}" | awk 'NF && !seen[$0]++' | paste -sd:)"
export LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "- LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
# libcuda.so.1 is the driver's: normally on the loader's path already; if
# not, look where container runtimes mount it (never CUDA's compat copy,
# which may not match the driver).
if ldd "$bin" 2> /dev/null | grep -q 'libcuda.so.1 => not found'; then
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
    if [ -e "$d/libcuda.so.1" ]; then
      export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
      say "- libcuda.so.1 from $d"
      break
    fi
  done
fi
ldd "$bin" > "$stash/logs/ldd.txt" 2>&1
if grep -q "not found" "$stash/logs/ldd.txt"; then
  say "- ldd: $(grep 'not found' "$stash/logs/ldd.txt" | tr -s ' \t' ' ' | paste -sd';')"
fi

# 4. The steps.
printf 'step\texit\tseconds\n' > "$stash/logs/steps.tsv"
step() { # name timeout command... ; stdout to logs/name.out, stderr to logs/name.log
  local name="$1" limit="$2"
  shift 2
  # timeout 0 would mean no limit at all.
  [ "$limit" -ge 1 ] 2> /dev/null || limit=1
  local s=$SECONDS
  timeout --kill-after=5 "$limit" "$@" > "$stash/logs/$name.out" 2> "$stash/logs/$name.log"
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - s))" >> "$stash/logs/steps.tsv"
  say "- step $name: exit $rc in $((SECONDS - s)) s$([ "$rc" = 124 ] && echo " (stopped at its ${limit} s limit)")"
  return "$rc"
}
step nvidia-smi 20 nvidia-smi
# bench device: two fifths of the time left, at most 240 s (its CPU side
# runs on the device machine's 16 cores; on 2 busy cores here it needs
# more than 130 s).
dev_limit=$(($(left) * 2 / 5))
[ "$dev_limit" -gt 240 ] && dev_limit=240
dev_limit="${DEVICE_LIMIT_S:-$dev_limit}"
step device "$dev_limit" "$bin" bench device --device "$device" --model "$model"
cp "$stash/logs/device.out" "$out/device.md" 2> /dev/null

sampler=""
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 > "$stash/logs/gpu-use.csv" 2> /dev/null &
  sampler=$!
fi
rm -rf "$stash/runs"
smoke_s=""
s=$SECONDS
if step smoke "$(($(left) - 30))" "$bin" run "$spec_file" --smoke --out "$stash/runs"; then
  smoke_s=$((SECONDS - s))
fi

# The largest version of the full spec whose estimate fits. Variants:
# seeds x generations; jobs (seed, arm) run in parallel, so on a GPU
# that is not saturated the estimate for fewer seeds errs long too.
chosen=""
if [ -n "$smoke_s" ]; then
  budget=$(($(left) - 25))
  for variant in "3 5" "1 5" "1 2"; do
    set -- $variant
    est="$(awk -v s="$smoke_s" -v k="$full_over_smoke" -v n="$1" -v g="$2" 'BEGIN { printf "%d", s * k * n / 3 * (g + 1) / 6 + 0.5 }')"
    say "- estimate for $1 seed(s) x $2 generations: ${est} s (smoke ${smoke_s} s x ${full_over_smoke} x $1/3 x $(($2 + 1))/6); ${budget} s left"
    if [ "$est" -le "$budget" ]; then
      chosen="$1 $2"
      break
    fi
  done
fi
run_dir=""
if [ -n "$chosen" ]; then
  set -- $chosen
  if [ "$chosen" = "3 5" ]; then
    spec="$spec_file"
    id="pretrained-blocksworld"
  else
    id="pretrained-blocksworld-gpu-reduced-${1}seed-${2}gen"
    spec="$stash/specs/$id.toml"
    seeds="[$(seq -s, 1 "$1")]"
    sed -e "s/^id = .*/id = \"$id\"/" \
      -e "s/^title = \"\(.*\)\"/title = \"\1 (reduced to fit the GPU check: $1 seed(s), $2 generations)\"/" \
      -e "s/^seeds = .*/seeds = $seeds/" \
      -e "/^\[deployment.defaults\]/,/^\[/ s/^generations = .*/generations = $2/" \
      "$spec_file" > "$spec"
  fi
  say "- running $id ($1 seed(s), $2 generations)"
  # shellcheck disable=SC2086 # RUN_FLAGS is a list of flags
  step full "$(($(left) - 15))" "$bin" run "$spec" --out "$stash/runs" ${RUN_FLAGS:-}
  run_dir="$stash/runs/$id"
  [ -d "$run_dir" ] || run_dir="$stash/runs/$id-smoke"
else
  say "- no version of the full spec fits the time left: only the smoke run ran"
fi
[ -n "$sampler" ] && kill "$sampler" 2> /dev/null

# 5. What comes back (at most 8 files).
{
  echo
  echo '## steps'
  echo
  cat "$stash/logs/steps.tsv"
  echo
  echo '## nvidia-smi'
  echo
  cat "$stash/logs/nvidia-smi.out" "$stash/logs/nvidia-smi.log" 2> /dev/null
  echo
  echo '## ldd'
  echo
  cat "$stash/logs/ldd.txt"
} >> "$report"
smoke_dir="$stash/runs/pretrained-blocksworld-smoke"
[ -d "$smoke_dir" ] && tar -czf "$out/smoke.tar.gz" -C "$stash/runs" "$(basename "$smoke_dir")"
if [ -n "$run_dir" ] && [ -d "$run_dir" ]; then
  for f in results.csv summary.md; do
    [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$out/$f"
  done
  tar -czf "$out/run.tar.gz" -C "$stash/runs" "$(basename "$run_dir")"
fi
tar -czf "$out/logs.tar.gz" -C "$stash" logs
say "- done in $((SECONDS - t0)) s; files in $out"
if grep -qv -P '^step\t|\t0\t' "$stash/logs/steps.tsv"; then
  exit 1
fi
exit 0
