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
# same padded run's losses without graphs, bit for bit.
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
echo "ok: coconut train on the GPU (fp32 = CPU, bf16 learns, resume = uninterrupted, graphs = eager)"
