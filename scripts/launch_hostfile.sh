#!/usr/bin/env bash
# Starts h200-mpibench on every GPU of the hosts in an Open MPI hostfile, one rank per GPU.
#   scripts/launch_hostfile.sh HOSTFILE GPUS_PER_HOST [h200-mpibench arguments...]
# NCCL_PROFILE=infiniband (or any configs/nccl/<name>.env) loads a NCCL profile; every NCCL_*
# variable of this shell is passed to all ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
hostfile=${1:?usage: $0 HOSTFILE GPUS_PER_HOST [args...]}
per_host=${2:?usage: $0 HOSTFILE GPUS_PER_HOST [args...]}
shift 2
if [ -n "${NCCL_PROFILE:-}" ]; then
  set -a; . "configs/nccl/${NCCL_PROFILE}.env"; set +a
fi
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
hosts=$(grep -cv '^\s*\(#\|$\)' "$hostfile")
forward=()
for v in $(compgen -e | grep '^NCCL_' || true); do forward+=(-x "$v"); done
exec mpirun --hostfile "$hostfile" -np $((hosts * per_host)) --map-by "ppr:${per_host}:node" --bind-to none \
  "${forward[@]}" target/release/h200-mpibench "$@"
