#!/usr/bin/env bash
# `mpirun -np 2 coconut train` with train.device: cuda: two data-parallel GPU ranks
# (launcher/device_step.h) against the one-process GPU run of the same config (the tiny
# ProsQA config for 4 epochs, stages 0-1, dropout 0.1, batch 16 in micro-batches of 8:
# one micro-batch per rank). parallel.gpu_comm: mpi, which lets both ranks share one
# GPU; nccl too where there are 2 GPUs. Checks:
#   - the per-step losses of 2 ranks are those of one process (first step within 1e-5,
#     every step within 1e-3, as the GPU against the CPU in test_train_cuda.sh: the
#     gradient sums run in another order);
#   - stopped after 7 steps and resumed on 2 ranks: the uninterrupted 2-rank losses, bit
#     for bit (the checkpoint holds each rank's optimizer shard);
#   - the same 2-rank checkpoint resumed by one process (another topology): the first 7
#     steps kept, the rest within 1e-3 of the uninterrupted run;
#   - with CUDA graphs (train.cuda_graphs, train.pad_columns 32) on 2 ranks: the same
#     padded run's losses without graphs, bit for bit, and every rank replayed graphs.
# Label gpu: without a GPU it prints "no CUDA device, skipping" (CTest: skipped), unless
# COCONUT_REQUIRE_GPU=1 (tests/gpu/run.sh), where that is a failure.
#   test_train_cuda_dp.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR MPIEXEC
set -euo pipefail
bin=$1 configs=$2 mpiexec=$4
mkdir -p "$3"
work=$(mktemp -d "$3/train_cuda_dp.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, step_losses, steps_close, skip_without_gpu

skip_without_gpu
gpus=$(nvidia-smi --list-gpus | wc -l)

# train NAME NP [--set ...]: NP 1 runs one process, else mpirun -np NP.
train() {
  local name=$1 np=$2
  shift 2
  local launch=()
  [[ $np == 1 ]] || launch=("$mpiexec" --oversubscribe -np "$np")
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "${launch[@]}" "$bin" train "$configs/prosqa_tiny.yaml" \
    --set run.dir="$work/$name" --set data.generate_train=160 --set data.generate_valid=16 --set train.epochs=4 \
    --set train.batch_size=16 --set train.micro_batch_size=8 --set curriculum.epochs_per_stage=2 \
    --set model.dropout=0.1 --set eval.every_epochs=0 --set train.device=cuda "$@" >"$work/$name.log" 2>&1 ||
    fail "$name: $(tail -n 20 "$work/$name.log")"
}

train one 1
comms=(mpi)
((gpus >= 2)) && comms+=(nccl)
for comm in "${comms[@]}"; do
  train "dp_$comm" 2 --set parallel.gpu_comm="$comm"
  grep -q "data-parallel rank 0 of 2" "$work/dp_$comm.log" || fail "$comm: the log does not name the data-parallel ranks"
  steps_close "$work/dp_$comm/steps.jsonl" "$work/one/steps.jsonl" 1e-5 1e-3 || fail "$comm: 2 ranks differ from one process"
  pass "$comm: 2 data-parallel GPU ranks give one process's losses"
done
((gpus >= 2)) || echo "note: 1 GPU, so parallel.gpu_comm: nccl was not run with 2 ranks (gpu_device_step_np1 runs it on 1)"

# CUDA graphs on the data-parallel ranks (train.cuda_graphs with train.pad_columns, so
# that plans repeat): the losses of the same padded run without graphs, bit for bit. In
# micro-batches of 4, two per rank: with nccl the last one, whose backward all-reduces,
# runs eagerly, and the first is replayed (each rank logs its replays).
for comm in "${comms[@]}"; do
  train "padded_$comm" 2 --set parallel.gpu_comm="$comm" --set train.pad_columns=32 --set train.micro_batch_size=4
  train "graphs_$comm" 2 --set parallel.gpu_comm="$comm" --set train.pad_columns=32 --set train.micro_batch_size=4 \
    --set train.cuda_graphs=true
  grep -q "CUDA graphs" "$work/graphs_$comm.log" || fail "$comm: the graphs run does not say it runs CUDA graphs"
  # Rank 1's info lines go to its log file only (the console shows rank 0's).
  for rank in 0 1; do graph_replays "$work/graphs_$comm/logs/train.rank$rank.log" 1; done
  [[ "$(step_losses "$work/graphs_$comm/steps.jsonl")" == "$(step_losses "$work/padded_$comm/steps.jsonl")" ]] ||
    fail "$comm: CUDA graphs on 2 ranks: $(step_losses "$work/graphs_$comm/steps.jsonl") vs $(step_losses "$work/padded_$comm/steps.jsonl")"
  pass "$comm: CUDA graphs on 2 data-parallel ranks = the same run without graphs"
done

# Stopped after 7 steps, resumed on 2 ranks: the uninterrupted run's bits.
train stop 2 --set parallel.gpu_comm=mpi --set checkpoint.every_steps=7 --set checkpoint.stop_after_steps=7
cp -r "$work/stop" "$work/stop_to_one"
train stop 2 --set parallel.gpu_comm=mpi --set checkpoint.every_steps=7 --resume auto
[[ "$(step_losses "$work/stop/steps.jsonl")" == "$(step_losses "$work/dp_mpi/steps.jsonl")" ]] ||
  fail "resumed on 2 ranks: $(step_losses "$work/stop/steps.jsonl") vs $(step_losses "$work/dp_mpi/steps.jsonl")"
pass "stopped and resumed on 2 GPU ranks = uninterrupted"

# The 2-rank checkpoint resumed by one process.
train stop_to_one 1 --set checkpoint.every_steps=7 --resume auto
grep -q "written by pp 1 x dp 2" "$work/stop_to_one.log" || fail "one process did not resume the 2-rank checkpoint"
python3 - "$work/stop_to_one/steps.jsonl" "$work/dp_mpi/steps.jsonl" <<'PY' || fail "resumed on one process (see above)"
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
assert len(a) == len(b), (len(a), len(b))
assert [x["loss"] for x in a[:7]] == [y["loss"] for y in b[:7]], "the first 7 steps changed"
worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a[7:], b[7:]))
print(f"2-rank checkpoint resumed by one process: worst relative difference after the resume {worst:.2e}")
assert worst <= 1e-3
PY
echo "ok: coconut train on data-parallel GPUs (2 ranks = one process, resume on 2 ranks and on one)"
