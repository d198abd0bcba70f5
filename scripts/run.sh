#!/usr/bin/env bash
# The main job on this machine: the collective sweeps on every local GPU (one rank each), then
# selftest and a Llama-2-7B-shaped (8 layers) SFT run on one GPU; or, with no GPU or no NCCL,
# the same sweeps over MPI on host memory with two ranks followed by the tiny Llama SFT run on
# the CPU. Extra arguments go to the sweep after the defaults below, so they win (e.g. -e 1G).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
if [ "$gpus" -gt 0 ]; then
  mpirun -np "$gpus" --bind-to none -x NCCL_NVLS_ENABLE=0 target/release/h200-mpibench \
    --suite nccl -b 8 -e 8G -f 4 -w 5 -n 20 -c 1 "$@"
  target/release/h200-mpibench selftest
  exec target/release/h200-mpibench --suite sft --model 7b --layers 8 --seq 2048 --micro-batch 4
else
  mpirun -np 2 --oversubscribe target/release/h200-mpibench --suite nccl -b 8 -e 16M -f 4 "$@"
  exec target/release/h200-mpibench --suite sft --model tiny
fi
