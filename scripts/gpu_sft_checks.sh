#!/usr/bin/env bash
# The SFT checks and benchmarks on one GPU, as run for the issue notes (binary prebuilt at
# target/release/h200-mpibench). Usage:
#   scripts/gpu_sft_checks.sh LOGDIR [selftest|7b|70b|70b_fit|profile|recompute|zero_dp|zero_dp_buckets|scaling|zero7b|zero13b]...
set -u
logs=${1:?usage: $0 LOGDIR steps...}; shift
mkdir -p "$logs"
bin=${BIN:-target/release/h200-mpibench} # BIN: another build, for A/B runs
export NCCL_NVLS_ENABLE=0
gpus=${GPUS:-$(nvidia-smi -L | wc -l)} # GPUS: use fewer than the host has
run() { # name, ranks, then the arguments
  local name=$1 ranks=$2; shift 2
  echo "== $name: mpirun -np $ranks $bin $*" | tee -a "$logs/summary.txt"
  local t0=$SECONDS
  local deadline=(); [[ " $* " == *" --suite "* ]] && deadline=(--timeout 120)
  # MPI_EXTRA: more mpirun options, e.g. "-x NCCL_MAX_NCHANNELS=8"
  mpirun --allow-run-as-root --bind-to none -x NCCL_NVLS_ENABLE=0 ${MPI_EXTRA:-} -np "$ranks" $bin "$@" "${deadline[@]}" --out "$logs/$name.h5" >"$logs/$name.log" 2>&1
  echo "   exit $? after $((SECONDS - t0)) s" | tee -a "$logs/summary.txt"
  grep -E "^# .*measured steps|^# GPU memory|^# communication|selftest:|FAIL|error" "$logs/$name.log" | head -6 | sed 's/^/   /' | tee -a "$logs/summary.txt"
}
zero_dp() { # stages, layers per bucket: every stage, with and without accumulation, on every
  # GPU, against the loss curve of one GPU at stage 0 with the same global batch of 8 sequences
  local stages=$1 bucket=$2
  run tiny_ref 1 --suite sft --model tiny --steps 30 --micro-batch 8 --grad-accum 1
  for z in $stages; do for acc in 1 2; do
    run "tiny_z${z}_acc${acc}_b${bucket}_np$gpus" "$gpus" --suite sft --model tiny --steps 30 --micro-batch $((8 / gpus / acc)) \
      --grad-accum "$acc" --zero "$z" --bucket-layers "$bucket"
  done; done
  python3 scripts/compare_losses.py "$logs/tiny_ref.h5" "$logs"/tiny_z*_b"${bucket}"_np"$gpus".h5 | tee -a "$logs/summary.txt"
}
for step in "$@"; do
  case $step in
    selftest) for i in $(seq "${SELFTEST_RUNS:-3}"); do run "selftest$i" "$gpus" selftest; done ;;
    7b) for mbs in 1 2 4 8; do
          run "7b_l8_mbs$mbs" 1 --suite sft --model 7b --layers 8 --seq 2048 --micro-batch "$mbs" --steps 12 --warmup-steps 3
        done ;;
    70b) run 70b_l2 1 --suite sft --model 70b --layers 2 --seq 2048 --micro-batch 1 --steps 10 --warmup-steps 3 ;;
    profile)
      run 7b_l1_profile 1 --suite sft --model 7b --layers 1 --seq 2048 --micro-batch 2 --steps 6 --warmup-steps 2 --profile
      run 7b_l8_mbs4_profile 1 --suite sft --model 7b --layers 8 --seq 2048 --micro-batch 4 --steps 6 --warmup-steps 2 --profile ;;
    recompute)
      run 7b_l8_mbs4_recompute 1 --suite sft --model 7b --layers 8 --seq 2048 --micro-batch 4 --steps 12 --warmup-steps 3 --recompute
      run 7b_l8_mbs2_accum2 1 --suite sft --model 7b --layers 8 --seq 2048 --micro-batch 2 --grad-accum 2 --steps 12 --warmup-steps 3 ;;
    zero_dp) zero_dp "0 1 2 3" 1 ;;
    zero_dp_buckets) zero_dp "1 2 3" 2 ;;
    zero7b) # whole Llama-2-7B on every GPU at stages 1-3, micro-batch 2 and 4
      for mbs in 2 4; do for z in 1 2 3; do
        run "7b_z${z}_mbs${mbs}_np$gpus" "$gpus" --suite sft --model 7b --seq 2048 --micro-batch "$mbs" --steps 10 --warmup-steps 3 --zero "$z"
      done; done ;;
    zero13b) # whole Llama-2-13B on every GPU at stage 3
      run "13b_z3_mbs1_np$gpus" "$gpus" --suite sft --model 13b --seq 2048 --micro-batch 1 --steps 8 --warmup-steps 3 --zero 3
      run "13b_z3_mbs2_np$gpus" "$gpus" --suite sft --model 13b --seq 2048 --micro-batch 2 --steps 8 --warmup-steps 3 --zero 3 ;;
    70b_fit) # the user's command shape: the planner's verdict on whole 70B, then 70B-shaped layers that fit
      run "70b_np$gpus" "$gpus" --model 70b
      run "70b_l16_z3_np$gpus" "$gpus" --model 70b --layers 16 --zero 3 --steps 8 --warmup-steps 3
      grep -h "does not fit\|plans" "$logs/70b_np$gpus.log" | head -2 | tee -a "$logs/summary.txt" ;;
    scaling) # weak scaling: the same per-GPU batch on 1 GPU, then on 2 and 4 at every stage
      run 7b_l8_mbs4_np1 1 --suite sft --model 7b --layers 8 --seq 2048 --micro-batch 4 --steps 12 --warmup-steps 3
      for n in 2 4; do for z in 0 1 2 3; do [ "$n" -le "$gpus" ] &&
        run "7b_l8_mbs4_z${z}_np$n" "$n" --suite sft --model 7b --layers 8 --seq 2048 --micro-batch 4 --steps 12 --warmup-steps 3 --zero "$z"
      done; done ;;
  esac
done
