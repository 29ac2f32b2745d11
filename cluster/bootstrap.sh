#!/usr/bin/env bash
# Installs, from Debian's packages, everything coconut needs to build and test.
# Idempotent: packages already present are not reinstalled, and apt's lists are only
# refreshed when something is missing. CUDA, cuBLAS and NCCL come from the CUDA
# toolkit in /usr/local/cuda when present (the CUDA backend is built only then).
# Usage: bash cluster/bootstrap.sh [--python] [--slurm]
#   --python: also the PyTorch peer for bench/tools
#   --slurm:  also Slurm and munge (slurm-wlm), for tests/cluster/test_slurm_local.sh
set -euo pipefail
python=0 slurm=0
for arg in "$@"; do
  case $arg in
    --python) python=1 ;;
    --slurm) slurm=1 ;;
    *) echo "bootstrap: unknown option '$arg' (expected --python, --slurm)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake pkg-config git python3
  openmpi-bin libopenmpi-dev
  libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libopenblas-openmp-dev
  libgtest-dev libgmock-dev
  libcairo2-dev
)
if [ $slurm = 1 ]; then packages+=(slurm-wlm munge); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "bootstrap: all Debian packages present"
fi

if [ $python = 1 ]; then
  # The independent references (fixture scripts in tools/) and the PyTorch peer of the benchmarks.
  python3 -c "import torch, transformers, tokenizers, safetensors" 2>/dev/null ||
    python3 -m pip install -q torch transformers tokenizers safetensors numpy
fi

if [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "bootstrap: CUDA toolkit found at /usr/local/cuda ($(/usr/local/cuda/bin/nvcc --version | tail -n 2 | head -n 1))"
else
  echo "bootstrap: no CUDA toolkit at /usr/local/cuda: the CUDA backend will not be built"
fi
