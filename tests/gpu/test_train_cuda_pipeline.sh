#!/usr/bin/env bash
# `mpirun -np 2 coconut train` with train.device: cuda and parallel.pp 2: two pipeline
# stages on the GPU (parallel/cuda_stage_compute.h; the ranks share the node's GPUs)
# against the same pipeline on the CPU, for the tiny ProsQA config (4 epochs, stages 0-1,
# dropout 0.1, batch 16 in micro-batches of 4, ring schedule). Checks:
#   - fp32: the per-step losses of the CPU pipeline (first step within 1e-5, every step
#     within 1e-3, as test_train_cuda.sh for one process), and the evaluation through the
#     stages ends the run;
#   - stopped after 7 steps and resumed on the GPU stages: the uninterrupted run's
#     losses, bit for bit;
#   - that checkpoint resumed by one GPU process (another topology): the first 7 steps
#     kept, the rest within 1e-3;
#   - bf16: the first step within 2e-2 of fp32's, and the loss falls.
# Label gpu: without a GPU it prints "no CUDA device, skipping" (CTest: skipped), unless
# COCONUT_REQUIRE_GPU=1 (tests/gpu/run.sh), where that is a failure.
#   test_train_cuda_pipeline.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR MPIEXEC
set -euo pipefail
bin=$1 configs=$2 mpiexec=$4
mkdir -p "$3"
work=$(mktemp -d "$3/train_cuda_pipeline.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, step_losses, steps_close, skip_without_gpu

skip_without_gpu

# train NAME NP DEVICE [--set ...]: NP 1 runs one process, else mpirun -np NP with pp 2.
train() {
  local name=$1 np=$2 device=$3
  shift 3
  local launch=() pp=1
  [[ $np == 1 ]] || launch=("$mpiexec" --oversubscribe -np "$np") pp=2
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "${launch[@]}" "$bin" train "$configs/prosqa_tiny.yaml" \
    --set run.dir="$work/$name" --set data.generate_train=160 --set data.generate_valid=16 --set train.epochs=4 \
    --set train.batch_size=16 --set train.micro_batch_size=4 --set curriculum.epochs_per_stage=2 \
    --set model.dropout=0.1 --set eval.every_epochs=0 --set parallel.pp=$pp --set parallel.schedule=ring \
    --set train.device="$device" "$@" >"$work/$name.log" 2>&1 || fail "$name: $(tail -n 20 "$work/$name.log")"
}

train cpu 2 cpu
train gpu 2 cuda
grep -q "stages on cuda fp32" "$work/gpu.log" || fail "the log does not say the stages run on the GPU"
grep -q "stages on cpu" "$work/cpu.log" || fail "the CPU pipeline's log does not say where its stages run"
steps_close "$work/gpu/steps.jsonl" "$work/cpu/steps.jsonl" 1e-5 1e-3 || fail "GPU stages differ from the CPU pipeline"
[[ -f "$work/gpu/eval_valid.json" ]] || fail "no evaluation at the end of the GPU pipeline run"
pass "2 pipeline stages on the GPU give the CPU pipeline's losses"

# Stopped after 7 steps, resumed on the GPU stages: the uninterrupted run's bits.
train stop 2 cuda --set checkpoint.every_steps=7 --set checkpoint.stop_after_steps=7
cp -r "$work/stop" "$work/stop_to_one"
train stop 2 cuda --set checkpoint.every_steps=7 --resume auto
[[ "$(step_losses "$work/stop/steps.jsonl")" == "$(step_losses "$work/gpu/steps.jsonl")" ]] ||
  fail "resumed on the GPU stages: $(step_losses "$work/stop/steps.jsonl") vs $(step_losses "$work/gpu/steps.jsonl")"
pass "stopped and resumed on 2 GPU stages = uninterrupted"

# The pipeline checkpoint resumed by one GPU process.
train stop_to_one 1 cuda --set checkpoint.every_steps=7 --resume auto
grep -q "written by pp 2 x dp 1" "$work/stop_to_one.log" || fail "one process did not resume the pipeline checkpoint"
python3 - "$work/stop_to_one/steps.jsonl" "$work/gpu/steps.jsonl" <<'PY' || fail "resumed on one process (see above)"
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
assert len(a) == len(b), (len(a), len(b))
assert [x["loss"] for x in a[:7]] == [y["loss"] for y in b[:7]], "the first 7 steps changed"
worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a[7:], b[7:]))
print(f"pipeline checkpoint resumed by one GPU process: worst relative difference after the resume {worst:.2e}")
assert worst <= 1e-3
PY
pass "the GPU pipeline's checkpoint resumes on one GPU process"

train bf16 2 cuda --set train.precision=bf16
python3 - "$work/bf16/steps.jsonl" "$work/gpu/steps.jsonl" <<'PY' || fail "bf16 pipeline stages (see above)"
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:])
print(f"bf16 stages: first step {a[0]:.6f} (fp32 {b[0]:.6f}), last {a[-1]:.6f}")
assert abs(a[0] - b[0]) <= 2e-2 * abs(b[0]) and a[-1] < a[0]
PY
echo "ok: coconut train with pipeline stages on the GPU (= the CPU pipeline, resume on the stages and on one process, bf16)"
