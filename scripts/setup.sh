#!/usr/bin/env bash
# Installs what building and testing h200-mpibench needs on Debian/Ubuntu, then builds the
# release binary. Safe to run again: it installs only what is missing. On a GPU host without
# cargo (the binary was built elsewhere and copied), it only checks that the binary is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mpirun >/dev/null || need_apt+=(openmpi-bin)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
[ -e /usr/include/x86_64-linux-gnu/openmpi/include/mpi.h ] || [ -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] \
  || need_apt+=(libopenmpi-dev)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
# HDF5's deflate filter (the growing tables are compressed) links the system zlib.
[ -e /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v cc >/dev/null || need_apt+=(build-essential)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

# Python side: h5py/numpy read the results, pandas/matplotlib draw the report; cmake >= 3.26 builds the static HDF5;
# NVRTC (CUDA 13.0, the GPU machines' version) compile-checks the kernels without a GPU.
pip_install() { python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"; }
# The report (scripts/report.py) and its tests: the versions pinned in its requirements file.
python3 -c "import h5py, numpy, pandas, matplotlib, pyarrow, pytest" 2>/dev/null || pip_install -r scripts/requirements-report.txt
cmake_ok() { command -v cmake >/dev/null && [ "$(printf '%s\n3.26\n' "$(cmake --version | awk 'NR==1{print $3}')" | sort -V | head -1)" = 3.26 ]; }
cmake_ok || { pip_install "cmake>=3.26,<4"; hash -r; }
python3 -c "import nvidia.cu13" 2>/dev/null || pip_install "nvidia-cuda-nvrtc==13.0.*"

if command -v cargo >/dev/null; then
  cargo build --release --locked
elif [ -x target/release/h200-mpibench ]; then
  echo "setup: no cargo here; using the prebuilt target/release/h200-mpibench"
else
  echo "setup: cargo is missing: install Rust (https://rustup.rs) or copy a built binary to target/release/" >&2
  exit 1
fi
