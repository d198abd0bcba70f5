# Sourced by the scripts: mpirun as root (containers, CI), NVRTC from the pip wheel for the
# kernel compile check, and NVLink multicast off (it can take shared hosts' GPUs out of service).
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
nvrtc_lib=$(python3 -c "import nvidia.cu13, os; print(os.path.join(nvidia.cu13.__path__[0], 'lib'))" 2>/dev/null || true)
if [ -n "$nvrtc_lib" ]; then
  export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
