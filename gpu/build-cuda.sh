#!/usr/bin/env bash
# Builds iterdeploy with `--features cuda` on a machine without a GPU or a
# CUDA install, from NVIDIA's compiler and libraries on PyPI (CUDA 13.0,
# to match the device machines' driver: see below). Run from anywhere;
# prints the binary's path and the environment a run needs.
#
# Why 13.0 and not the newest: candle compiles its kernels to PTX, which
# the driver turns into machine code when the binary loads them. A driver
# loads PTX of its own CUDA version or older only ("unsupported PTX
# version" otherwise). The lent machines run driver 580.x, CUDA 13.0, so
# the PTX must come from nvcc 13.0 (PTX ISA 9.0). Shipping machine code
# (SASS) for sm_90 instead would need candle-kernels built as cubins,
# which its build script does not offer. The script checks the PTX
# version it produced.
#
#   gpu/build-cuda.sh              # kernels for compute capability 90 (H100)
#   CUDA_COMPUTE_CAP=80 gpu/build-cuda.sh    # A100; 89 for L4/RTX 40xx
#
# What it does:
# 1. a venv (target/cuda-venv) with nvidia-cuda-nvcc, -runtime, -nvrtc,
#    -cublas, -curand and -cccl, pinned;
# 2. the unversioned library names the linker wants (libcublas.so → .so.13,
#    …) beside the wheels' libraries;
# 3. a link-time stand-in for the driver, libcuda.so (soname libcuda.so.1):
#    every cu* entry point cudarc declares, each returning
#    CUDA_ERROR_NO_DEVICE. The real driver of a GPU machine replaces it at
#    run time. The binary needs a libcuda.so.1 to start: on a machine
#    without a driver, put target/cuda-stub on LD_LIBRARY_PATH too, and it
#    finds no device and runs on the CPU;
# 4. cargo build --release --features cuda, into target/cuda (so the CPU
#    build in target/release is untouched).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
venv="${ITERDEPLOY_CUDA_VENV:-$root/target/cuda-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
# nvcc's own dependencies (nvvm, crt) are pinned too: an unpinned nvvm
# writes the newest PTX, which an older ptxas (and driver) refuses.
# pip's check is cheap when everything is installed already.
"$venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88" \
  "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-nvrtc==13.0.88" "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.0.35" \
  "nvidia-cuda-cccl==13.0.85" >&2
cu="$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)"
for lib in cublas cublasLt curand nvrtc cudart; do
  real="$(ls "$cu/lib/lib$lib.so."* | grep -v builtins | head -1)"
  ln -sf "$(basename "$real")" "$cu/lib/lib$lib.so"
done
# The driver stand-in: the names of cudarc's driver entry points, read
# from the cudarc version Cargo.lock pins. On a fresh machine nothing has
# downloaded it yet (the CPU build does not use it), so fetch the locked
# crates first and read the file out of cargo's download cache.
stub="$root/target/cuda-stub"
mkdir -p "$stub"
cudarc="$(awk '/^name = "cudarc"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")"
(cd "$root" && cargo fetch >&2)
crate="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"cudarc-$cudarc.crate" | tail -1)"
tar -xzf "$crate" -C "$stub" "cudarc-$cudarc/src/driver/sys/mod.rs"
sys="$stub/cudarc-$cudarc/src/driver/sys/mod.rs"
grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$sys" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u |
  awk '{ printf "int %s(void) { return 100; }\n", $1 }' > "$stub/libcuda.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so" "$stub/libcuda.c"
ln -sf libcuda.so "$stub/libcuda.so.1"
ln -sf "$stub/libcuda.so" "$cu/lib/libcuda.so"
export CUDA_HOME="$cu" PATH="$cu/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" CUDARC_CUDA_VERSION=13000
(cd "$root" && cargo build --release --features cuda --target-dir target/cuda >&2)
echo "built: $root/target/cuda/release/iterdeploy" >&2
echo "run it with: LD_LIBRARY_PATH=$cu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" >&2
echo "$root/target/cuda/release/iterdeploy"
