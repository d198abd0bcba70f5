#!/usr/bin/env bash
# The collective-sweep checks on one GPU host, as run for the issue notes: builds nothing,
# runs the binary already at target/release/h200-mpibench. Usage:
#   scripts/gpu_sweep_checks.sh LOGDIR [quick|full|full4G|bf16|network|errors]...
# Every mpirun gets NCCL_NVLS_ENABLE=0 (NVLink multicast stays off on shared hosts).
set -u
logs=${1:?usage: $0 LOGDIR steps...}; shift
mkdir -p "$logs"
bin=target/release/h200-mpibench
gpus=$(nvidia-smi -L | wc -l)
run() { # name, then the command; keeps its output and exit code
  local name=$1; shift
  echo "== $name: $*" | tee -a "$logs/summary.txt"
  local t0=$SECONDS
  "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$logs/summary.txt"
  grep -E "Wrong elements|Avg bus|error" "$logs/$name.log" | head -5 | sed 's/^/   /' | tee -a "$logs/summary.txt"
}
mpi() { mpirun --allow-run-as-root --bind-to none -x NCCL_NVLS_ENABLE=0 "$@"; }
for step in "$@"; do
  case $step in
    quick)
      run singleton env NCCL_NVLS_ENABLE=0 $bin -b 8 -e 1M -f 16 --collectives all_reduce --out "$logs/singleton.h5"
      run all_types_ops mpi -np "$gpus" $bin -b 8 -e 4M -f 8 -d all -o all -n 5 -w 2 --out "$logs/types.h5"
      run graphs mpi -np "$gpus" $bin -b 8 -e 64M -f 8 -G 2 --out "$logs/graphs.h5" ;;
    full)
      run full mpi -np "$gpus" $bin --suite nccl -b 8 -e 8G -f 4 -w 5 -n 20 -c 1 --out "$logs/full.h5" ;;
    bf16)
      run bf16 mpi -np "$gpus" $bin --collectives all_reduce,reduce_scatter,all_gather -d bfloat16 -b 1M -e 8G -f 4 --out "$logs/bf16.h5" ;;
    full4G)
      run full4G mpi -np "$gpus" $bin --suite nccl -b 8 -e 4G -f 4 --out "$logs/full4G.h5" ;;
    network)
      run network mpi -np "$gpus" -x NCCL_P2P_DISABLE=1 -x NCCL_SHM_DISABLE=1 $bin -b 8 -e 1G -f 4 --out "$logs/network.h5" ;;
    errors)
      run too_many_ranks mpi -np $((gpus + 1)) --oversubscribe $bin -b 8 -e 1K
      run bad_size mpi -np "$gpus" $bin -b 1M -e 1K ;;
  esac
done
