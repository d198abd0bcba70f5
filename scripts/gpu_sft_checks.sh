#!/usr/bin/env bash
# The SFT checks and benchmarks on one GPU, as run for the issue notes (binary prebuilt at
# target/release/h200-mpibench). Usage:
#   scripts/gpu_sft_checks.sh LOGDIR [selftest|7b|70b|70b_fit|profile|recompute|zero_dp|zero_dp_buckets|scaling|zero7b|zero13b|
#                                     ops|sdpa|memcheck|vs_torch]...
# ops, sdpa, memcheck and vs_torch are issue 17's comparisons, in one device call: ops times every
# build of BINS (default BIN); memcheck and vs_torch run BIN; sdpa and vs_torch's torch.compile run
# ANCHORS (a copy of ../shared/anchors, default .carry/anchors).
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
anchors=${ANCHORS:-.carry/anchors}
attention_shapes=("" "--batch 1 --heads 64 --kv-heads 8" "--batch 4 --heads 64 --kv-heads 64 --head-dim 64"
  "--batch 1 --heads 64 --kv-heads 8 --head-dim 64")
ops() { # each op alone, every build in turn, two rounds: attention at the 7B and 70B layers' shapes
  # (head_dim 128 and 64), AdamW beside the device copy
  rm -f "$logs/ops.txt"
  op() { # build, round, then the op's arguments; its whole output, and its exit status if not 0
    # (124: timed out)
    local b=$1 round=$2; shift 2
    timeout 120 mpirun --allow-run-as-root --bind-to none -x NCCL_NVLS_ENABLE=0 -np 1 "$b" op "$@" --seed "$round" >>"$logs/ops.txt" 2>&1 ||
      echo "   exit $? (op $*)" >>"$logs/ops.txt"
  }
  for round in 1 2; do for b in ${BINS:-$bin}; do
    echo "== $b round $round" >>"$logs/ops.txt"
    # shellcheck disable=SC2086 # a shape is several flags
    for shape in "${attention_shapes[@]}"; do op "$b" "$round" attention $shape; done
    op "$b" "$round" adamw,copy
  done; done
  grep -vE "^# (op on|rate at)" "$logs/ops.txt" | tee -a "$logs/summary.txt"
}
sdpa() { # PyTorch SDPA (cuDNN, FA2) on the same shapes: the anchor, and its head_dim 64 variant
  python3 "$anchors/attn_bench.py" >"$logs/sdpa.log" 2>&1 || echo "   exit $? (attn_bench.py)" | tee -a "$logs/summary.txt"
  sed 's/for (B, H, KV, S, D) in \[.*\]:/for (B, H, KV, S, D) in [(4, 64, 64, 2048, 64), (1, 64, 8, 2048, 64)]:/' "$anchors/attn_bench.py" >"$logs/attn_bench_hd64.py"
  grep -q "(4, 64, 64, 2048, 64)" "$logs/attn_bench_hd64.py" || echo "   attn_bench.py's shapes line changed: no head_dim 64 variant" | tee -a "$logs/summary.txt"
  python3 "$logs/attn_bench_hd64.py" >>"$logs/sdpa.log" 2>&1 || echo "   exit $? (attn_bench_hd64.py)" | tee -a "$logs/summary.txt"
  grep "^{" "$logs/sdpa.log" | grep -v efficient | tee -a "$logs/summary.txt"
}
memcheck() { # compute-sanitizer on the attention kernels where sequences end inside tiles and
  # heads' rows start off 16-byte boundaries (s333), with and without the GQA split, and head_dim 64
  rm -f "$logs/memcheck.txt"
  for shape in "--batch 1 --heads 8 --kv-heads 2 --seq 333" "--batch 1 --heads 4 --kv-heads 4 --seq 333" \
    "--batch 2 --heads 8 --kv-heads 2 --seq 77 --head-dim 64"; do
    echo "== memcheck $shape" >>"$logs/memcheck.txt"
    # shellcheck disable=SC2086
    timeout 100 compute-sanitizer --tool memcheck --print-limit 5 "$bin" op attention $shape --repetitions 1 --warmup 0 >>"$logs/memcheck.txt" 2>&1 ||
      echo "== exit $? (124: timed out)" >>"$logs/memcheck.txt"
  done
  grep -E "^== |ERROR SUMMARY" "$logs/memcheck.txt" | tee -a "$logs/summary.txt"
}
vs_torch() { # SFT beside torch_llama_bench.py --compile (FSDP2) at micro-batch 2, 4 and 8, then the
  # 70B-shaped target
  for mbs in 2 4 8; do
    run "7b_l8_mbs${mbs}_sft" 1 --suite sft --model 7b --layers 8 --seq 2048 --micro-batch "$mbs" --steps 10
    torchrun --standalone --nproc_per_node 1 "$anchors/torch_llama_bench.py" --model 7b --layers 8 --mbs "$mbs" --compile >"$logs/torch_mbs$mbs.log" 2>&1 ||
      echo "   exit $? (torch_llama_bench.py --mbs $mbs)" | tee -a "$logs/summary.txt"
    grep "^{" "$logs/torch_mbs$mbs.log" | tee -a "$logs/summary.txt"
  done
  run 70b_l4_ga8 1 --suite sft --model 70b --layers 4 --micro-batch 1 --grad-accum 8 --steps 6
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
    ops | sdpa | memcheck | vs_torch) "$step" ;;
    *) echo "$0: no step $step" >&2; exit 2 ;;
  esac
done
