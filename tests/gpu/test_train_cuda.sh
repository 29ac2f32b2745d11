#!/usr/bin/env bash
# `coconut train` with train.device: cuda against the same run on the CPU: the tiny
# ProsQA config for 4 epochs (stages 0-1 of the curriculum, thoughts fed back, an
# optimizer reset at the stage switch, dropout 0.1), 160 items, batch 16 in micro-batches
# of 8. fp32 on the GPU gives the CPU's per-step losses (first step within 1e-5, every
# step within 1e-3: the difference is summation order, and AdamW turns rounding noise
# in a gradient that is zero in exact arithmetic into steps of either sign); bf16 mixed
# precision trains (finite losses, the last epoch's mean below the first's), also with
# the fused attention (train.attention: fused, on a head-64 model without dropout). Then
# a run stopped after 7 steps and resumed on the GPU gives the uninterrupted GPU run's
# losses; and a run with CUDA graphs (train.cuda_graphs, train.pad_columns 32) gives the
# same padded run's losses without graphs, bit for bit; a run whose device weights or
# gradients turn NaN (COCONUT_TRAIN_FAULT) stops, or skips the step, as on the CPU.
# Label gpu: without a GPU it prints "no CUDA device, skipping" (CTest: skipped), unless
# COCONUT_REQUIRE_GPU=1 (tests/gpu/run.sh), where that is a failure.
#   test_train_cuda.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail
bin=$1 configs=$2
mkdir -p "$3"
work=$(mktemp -d "$3/train_cuda.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect, step_losses, skip_without_gpu

skip_without_gpu

train() {
  local name=$1
  shift
  OPENBLAS_NUM_THREADS=2 "$bin" train "$configs/prosqa_tiny.yaml" --set run.dir="$work/$name" \
    --set data.generate_train=160 --set data.generate_valid=16 --set train.epochs=4 --set train.batch_size=16 \
    --set train.micro_batch_size=8 --set curriculum.epochs_per_stage=2 --set model.dropout=0.1 \
    --set eval.every_epochs=0 "$@" >"$work/$name.log" 2>&1 || fail "$name: $(tail -n 20 "$work/$name.log")"
}

train cpu --set train.device=cpu
train gpu32 --set train.device=cuda --set train.precision=fp32
train gpu16 --set train.device=cuda --set train.precision=bf16
python3 - "$work" <<'PY' || fail "losses (see above)"
import json, math, sys
work = sys.argv[1]
def steps(name):
    return [json.loads(l) for l in open(f"{work}/{name}/steps.jsonl")]
cpu, g32, g16 = steps("cpu"), steps("gpu32"), steps("gpu16")
assert len(cpu) == len(g32) == len(g16) > 8, (len(cpu), len(g32), len(g16))
first = abs(g32[0]["loss"] - cpu[0]["loss"]) / abs(cpu[0]["loss"])
worst = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(g32, cpu))
print(f"fp32 GPU vs CPU: first step relative difference {first:.2e}, worst over {len(cpu)} steps {worst:.2e}")
assert first <= 1e-5 and worst <= 1e-3, "fp32 GPU losses differ from the CPU's"
assert all(math.isfinite(s["loss"]) for s in g16), "bf16: a loss is not finite"
e0 = [s["loss"] for s in g16 if s["epoch"] == 0]
e3 = [s["loss"] for s in g16 if s["epoch"] == 3]
print(f"bf16: epoch 0 mean loss {sum(e0)/len(e0):.4f}, epoch 3 {sum(e3)/len(e3):.4f}")
assert sum(e3) / len(e3) < sum(e0) / len(e0), "bf16 did not learn"
PY

# The final evaluation ran on the GPU (model/cuda_decoder.h): in fp32 it generates what
# the CPU generates from the same weights (`coconut eval` decodes on the CPU).
grep -q "evaluation on the GPU" "$work/gpu32.log" || fail "the GPU run does not say it evaluates on the GPU"
OPENBLAS_NUM_THREADS=2 "$bin" eval "$work/gpu32" --device cpu --out "$work/gpu32_on_cpu.json" >"$work/eval.log" 2>&1 ||
  fail "coconut eval: $(tail -n 20 "$work/eval.log")"
python3 - "$work/gpu32/eval_valid.json" "$work/gpu32_on_cpu.json" <<'PY' || fail "GPU evaluation (see above)"
import json, sys
gpu, cpu = (json.load(open(p)) for p in sys.argv[1:])
assert len(gpu["items"]) == len(cpu["items"]) == 16, (len(gpu["items"]), len(cpu["items"]))
same = sum(a["generated"] == b["generated"] for a, b in zip(gpu["items"], cpu["items"]))
print(f"fp32 evaluation on the GPU vs the CPU: {same}/16 generations equal, accuracy {gpu['accuracy']} vs {cpu['accuracy']}")
assert same == 16 and gpu["accuracy"] == cpu["accuracy"], "the GPU decoder generates other text than the CPU's"
PY

# The fused attention kernel needs head size 64 and no attention dropout.
train fused --set train.device=cuda --set train.precision=bf16 --set train.attention=fused --set model.d_model=128 \
  --set model.n_head=2 --set model.dropout=0
grep -q "attention bf16 fused" "$work/fused.log" || fail "the fused run does not say it runs the fused attention"
grep -q "not applicable" "$work/fused.log" && fail "the fused attention fell back: $(grep attention "$work/fused.log")"
python3 - "$work/fused/steps.jsonl" <<'PY' || fail "fused attention (see above)"
import json, math, sys
s = [json.loads(l) for l in open(sys.argv[1])]
assert all(math.isfinite(x["loss"]) for x in s), "a loss is not finite"
e0 = [x["loss"] for x in s if x["epoch"] == 0]
e3 = [x["loss"] for x in s if x["epoch"] == 3]
print(f"bf16 fused attention: epoch 0 mean loss {sum(e0)/len(e0):.4f}, epoch 3 {sum(e3)/len(e3):.4f}")
assert sum(e3) / len(e3) < sum(e0) / len(e0), "did not learn"
PY

# Stopped after 7 steps (a checkpoint), resumed: the losses of the uninterrupted run.
train stop --set train.device=cuda --set checkpoint.every_steps=7 --set checkpoint.stop_after_steps=7
train stop --set train.device=cuda --set checkpoint.every_steps=7 --resume auto
[[ "$(step_losses "$work/stop/steps.jsonl")" == "$(step_losses "$work/gpu32/steps.jsonl")" ]] ||
  fail "resumed GPU run: $(step_losses "$work/stop/steps.jsonl") vs $(step_losses "$work/gpu32/steps.jsonl")"
# CUDA graphs in training (train.cuda_graphs with train.pad_columns, so that plans repeat):
# the same losses, bit for bit, as the same padded run without graphs (a replayed graph
# runs the eager path's kernels), and the padded run's within 1e-3 of the unpadded one's
# (summation order, which AdamW amplifies over the steps, as GPU against CPU above).
train padded --set train.device=cuda --set train.pad_columns=32
train graphs --set train.device=cuda --set train.pad_columns=32 --set train.cuda_graphs=true
grep -q "CUDA graphs" "$work/graphs.log" || fail "the graphs run does not say it runs CUDA graphs"
graph_replays "$work/graphs.log" 1
[[ "$(step_losses "$work/graphs/steps.jsonl")" == "$(step_losses "$work/padded/steps.jsonl")" ]] ||
  fail "CUDA graphs in training: $(step_losses "$work/graphs/steps.jsonl") vs $(step_losses "$work/padded/steps.jsonl")"
python3 - "$work/padded/steps.jsonl" "$work/gpu32/steps.jsonl" <<'PY' || fail "padded GPU run (see above)"
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:])
assert len(a) == len(b), (len(a), len(b))
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
print(f"pad_columns 32 on the GPU vs unpadded: worst relative loss difference {worst:.2e}")
assert worst <= 1e-3, worst
PY
pass "CUDA graphs in training give the eager padded run's losses"

# A run that diverges on the GPU (COCONUT_TRAIN_FAULT poisons the device model's wpe row 0,
# launcher/train_loop.cpp; tests/launcher/test_train_diverged.sh is the CPU's version):
#   - weights NaN after step 5, in fp32 and in bf16 (where the forward reads the bf16
#     copy, poisoned too): step 6's loss is NaN, exit 3, diverged.json names step 6 and
#     the step-4 checkpoint, and nothing later is saved;
#   - a NaN gradient at step 6 with train.skip_nonfinite_steps 1: the device step does
#     not apply it (steps.jsonl: no norm for step 6) and the run finishes; its step-6
#     checkpoint holds the weights of the clean run's step 5, byte for byte.
diverge() {
  local name=$1 fault=$2 rc=0
  shift 2
  COCONUT_TRAIN_FAULT=$fault OPENBLAS_NUM_THREADS=2 "$bin" train "$configs/prosqa_tiny.yaml" \
    --set run.dir="$work/$name" --set data.generate_train=160 --set data.generate_valid=16 --set train.epochs=4 \
    --set train.batch_size=16 --set train.micro_batch_size=8 --set curriculum.epochs_per_stage=2 \
    --set model.dropout=0.1 --set eval.every_epochs=0 --set train.device=cuda --set checkpoint.every_steps=2 \
    --set checkpoint.keep_last=0 "$@" >"$work/$name.log" 2>&1 || rc=$?
  [[ $rc == 3 ]] || fail "$name exited $rc, expected 3: $(tail -n 20 "$work/$name.log")"
}
for precision in fp32 bf16; do
  diverge "nan_$precision" nan_weights@5 --set train.precision=$precision
  python3 - "$work/nan_$precision/diverged.json" <<'PY' || fail "$precision: diverged.json (see above)"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["step"] == 6 and d["loss"] == "nan" and d["last_checkpoint"].endswith("/step-00000004"), d
PY
  [[ $(cd "$work/nan_$precision/checkpoints" && ls -d step-* | tr '\n' ' ') == "step-00000002 step-00000004 " ]] ||
    fail "$precision: checkpoints after the NaN: $(ls "$work/nan_$precision/checkpoints")"
  [[ ! -e $work/nan_$precision/model ]] || fail "$precision: a diverged run exported its model"
done
pass "weights turned NaN on the GPU (fp32, bf16): the run stops at step 6 before saving"

COCONUT_TRAIN_FAULT=nan_grads@6 train skip --set train.device=cuda --set train.skip_nonfinite_steps=1 \
  --set checkpoint.every_steps=1 --set checkpoint.stop_after_steps=6
train clean5 --set train.device=cuda --set checkpoint.every_steps=1 --set checkpoint.stop_after_steps=5
# The poison is bytes 0xFF, a NaN with the sign bit set, which may print as -nan.
grep -Eq "the gradient norm of step 6 .* is -?nan .*the step was not applied: skipped \(1 in a row" "$work/skip.log" ||
  fail "skip: no warning: $(grep -i -e skip -e fault "$work/skip.log" | head -3)"
python3 - "$work/skip/steps.jsonl" "$work/clean5/steps.jsonl" <<'PY' || fail "skip: steps.jsonl (see above)"
import json, sys
skip, clean = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
assert len(skip) == 6 and skip[5]["grad_norm"] is None, skip
assert [r["loss"] for r in skip[:5]] == [r["loss"] for r in clean], "the first 5 steps differ"
PY
for run in skip/checkpoints/step-00000006 clean5/checkpoints/step-00000005; do
  "$bin" ckpt export "$work/$run" --to "$work/export_${run%%/*}" >/dev/null 2>&1 || fail "export $run"
done
cmp -s "$work/export_skip/model.safetensors" "$work/export_clean5/model.safetensors" ||
  fail "skip: the device weights after the skipped step 6 are not those after step 5"
pass "a NaN gradient on the GPU is not applied: the weights after step 6 are step 5's"

echo "ok: coconut train on the GPU (fp32 = CPU, bf16 learns, resume = uninterrupted, graphs = eager, divergence)"
