#!/usr/bin/env bash
# A run that diverges stops without saving the bad state (launcher/train_loop.h,
# TrainingDiverged). COCONUT_TRAIN_FAULT=nan_weights@S turns wpe row 0 into NaN after
# step S, as an overflowing update would, nan_grads@S its gradient of step S; checkpoints
# every 2 steps:
#  1. poisoned after step 5: step 6's loss is NaN; exit 3, RUN_DIR/diverged.json names
#     step 6, loss "nan" and the last checkpoint (step 4); no checkpoint after it, no
#     model, no evaluation; `--resume auto` without the fault continues from step 4 to
#     the end with the losses of a run that never diverged, bit for bit, and removes
#     diverged.json;
#  2. poisoned after step 6, a checkpoint step: the loss is still finite, but the state
#     to save holds NaN: exit 3, nothing saved after step 4;
#  3. a NaN gradient with a finite loss (nan_grads@6): the step is not applied, exit 3;
#  4. two pipeline stages under mpirun, with each fault: every rank exits 3; the clean
#     run's per-step gradient norms (steps.jsonl) equal one process's within 1e-5;
#  5. train.skip_nonfinite_steps: with 1, the NaN gradient of step 6 is skipped and the
#     run finishes: its step-6 checkpoint holds the weights of a clean run's step 5 and
#     the optimizer's step count of step 5; with 2, weights poisoned after step 5 give NaN
#     at steps 6, 7 and 8, and the third in a row ends the run;
#  6. `coconut sweep`: the diverging grid point is recorded as diverged (not failed, exit
#     0) beside the one that finishes, and a rerun skips it.
#   test_train_diverged.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$(cd "$2" && pwd)  # absolute: the sweep file below names its base config
mkdir -p "$3"
work=$(mktemp -d "$3/diverged.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass

# 64 items in batches of 16: 4 steps an epoch, 12 in all.
args=("$configs/prosqa_tiny.yaml" --set train.epochs=3 --set curriculum.epochs_per_stage=1
      --set data.generate_train=64 --set data.generate_valid=8 --set train.batch_size=16
      --set model.d_model=32 --set eval.max_new_tokens=24 --set run.threads=1
      --set checkpoint.every_steps=2 --set checkpoint.keep_last=0)

# diverge NAME NP FAULT: a run that must exit 3; its output in $work/NAME.log.
diverge() {
  local name=$1 np=$2 fault=$3 rc=0
  local cmd=("$bin" train "${args[@]}" --set run.dir="$work/$name")
  [[ $np == 1 ]] || cmd=(mpirun --oversubscribe -np "$np" "${cmd[@]}" --set parallel.pp="$np")
  COCONUT_TRAIN_FAULT=$fault "${cmd[@]}" >"$work/$name.log" 2>&1 || rc=$?
  [[ $rc == 3 ]] || fail "$name exited $rc, expected 3: $(tail -n 20 "$work/$name.log")"
}
# field RUN KEY: a field of RUN's diverged.json.
field() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/$1/diverged.json" "$2"; }
checkpoints() { (cd "$work/$1/checkpoints" && ls -d step-* | tr '\n' ' '); }
losses() { python3 -c "import json, sys; print([json.loads(l)['loss'] for l in open(sys.argv[1])])" "$1/steps.jsonl"; }

# ---- 1. the loss turns NaN -----------------------------------------------------------
diverge loss 1 nan_weights@5
[[ $(field loss step) == 6 && $(field loss loss) == nan && $(field loss last_checkpoint) == */step-00000004 ]] ||
  fail "loss: diverged.json: $(cat "$work/loss/diverged.json")"
[[ $(checkpoints loss) == "step-00000002 step-00000004 " ]] || fail "loss: checkpoints $(checkpoints loss)"
[[ ! -e $work/loss/model && ! -e $work/loss/eval_valid.json ]] || fail "loss: a diverged run exported or evaluated"
grep -q "training diverged: the loss of step 6 (epoch 1, stage 1, batch 2) is nan" "$work/loss.log" ||
  fail "loss: no message: $(tail -n 5 "$work/loss.log")"
"$bin" train "${args[@]}" --set run.dir="$work/loss" --resume auto >>"$work/loss.log" 2>&1 ||
  fail "resume after divergence: $(tail -n 20 "$work/loss.log")"
"$bin" train "${args[@]}" --set run.dir="$work/clean" >"$work/clean.log" 2>&1 || fail "clean run: $(tail -n 20 "$work/clean.log")"
[[ $(losses "$work/loss") == "$(losses "$work/clean")" ]] ||
  fail "resumed losses $(losses "$work/loss") differ from the clean run's $(losses "$work/clean")"
[[ ! -e $work/loss/diverged.json && -f $work/loss/model/model.safetensors ]] ||
  fail "the resumed run left diverged.json or exported no model"
pass "a NaN loss stops the run at step 6 before any save; resumed from step 4 it equals a clean run"

# ---- 2. the state to save holds NaN, the loss does not ---------------------------------
diverge state 1 nan_weights@6
[[ $(field state step) == 6 && $(field state last_checkpoint) == */step-00000004 ]] ||
  fail "state: diverged.json: $(cat "$work/state/diverged.json")"
field state why | grep -q "the state after step 6 (epoch 1, batch 2) holds a NaN or an infinity (on 1 rank(s))" ||
  fail "state: why: $(field state why)"
[[ $(checkpoints state) == "step-00000002 step-00000004 " ]] || fail "state: checkpoints $(checkpoints state)"
pass "a state holding NaN is not saved, though its loss was finite"

# ---- 3. the gradient turns NaN, the loss does not -------------------------------------
diverge grads 1 nan_grads@6
field grads why | grep -q "the gradient norm of step 6 (epoch 1, stage 1, batch 2) is nan (loss [0-9.]*, learning rate 0.001); the step was not applied" ||
  fail "grads: why: $(field grads why)"
[[ $(checkpoints grads) == "step-00000002 step-00000004 " ]] || fail "grads: checkpoints $(checkpoints grads)"
pass "a NaN gradient is not applied and stops the run"

# ---- 4. two pipeline stages -----------------------------------------------------------
for fault in nan_weights@5 nan_grads@6; do
  diverge "stages_${fault%@*}" 2 "$fault"
  [[ $(field "stages_${fault%@*}" step) == 6 && $(checkpoints "stages_${fault%@*}") == "step-00000002 step-00000004 " ]] ||
    fail "stages, $fault: $(cat "$work/stages_${fault%@*}/diverged.json"); checkpoints $(checkpoints "stages_${fault%@*}")"
done
mpirun --oversubscribe -np 2 "$bin" train "${args[@]}" --set parallel.pp=2 --set run.dir="$work/clean2" \
  >"$work/clean2.log" 2>&1 || fail "clean pp 2 run: $(tail -n 20 "$work/clean2.log")"
python3 - "$work/clean/steps.jsonl" "$work/clean2/steps.jsonl" <<'PY' || fail "gradient norms of one process and pp 2 differ"
import json, math, sys
one, two = ([json.loads(l)["grad_norm"] for l in open(p)] for p in sys.argv[1:])
assert len(one) == len(two) == 12 and all(math.isfinite(g) and g > 0 for g in one), (one, two)
assert all(abs(a - b) <= 1e-5 * a for a, b in zip(one, two)), (one, two)
PY
pass "pp 2 under mpirun: every rank exits 3 at step 6 with either fault; its gradient norms equal one process's"

# ---- 5. skipping steps -----------------------------------------------------------------
COCONUT_TRAIN_FAULT=nan_grads@6 "$bin" train "${args[@]}" --set run.dir="$work/skip" \
  --set train.skip_nonfinite_steps=1 >"$work/skip.log" 2>&1 || fail "skip: $(tail -n 20 "$work/skip.log")"
grep -q "the gradient norm of step 6 (epoch 1, stage 1, batch 2) is nan .*the step was not applied: skipped (1 in a row" \
  "$work/skip.log" || fail "skip: no warning: $(grep -i skip "$work/skip.log" | head -3)"
"$bin" train "${args[@]}" --set run.dir="$work/clean5" --set checkpoint.every_steps=1 \
  --set checkpoint.stop_after_steps=5 >"$work/clean5.log" 2>&1 || fail "clean5: $(tail -n 20 "$work/clean5.log")"
for run in skip/checkpoints/step-00000006 clean5/checkpoints/step-00000005; do
  "$bin" ckpt export "$work/$run" --to "$work/export_${run%%/*}" >/dev/null 2>&1 || fail "export $run"
done
cmp -s "$work/export_skip/model.safetensors" "$work/export_clean5/model.safetensors" ||
  fail "skip: the weights after the skipped step 6 are not those after step 5"
adam_step() { "$bin" ckpt inspect "$work/$1" | sed -n 's/^  trainer state *//p' | python3 -c "import json, sys; print(json.load(sys.stdin)['adam_step'])"; }
[[ $(adam_step skip/checkpoints/step-00000006) == $(adam_step clean5/checkpoints/step-00000005) ]] ||
  fail "skip: optimizer steps $(adam_step skip/checkpoints/step-00000006) after the skipped step, $(adam_step clean5/checkpoints/step-00000005) after step 5"
python3 - "$work/skip/steps.jsonl" "$work/clean/steps.jsonl" <<'PY' || fail "skip: steps.jsonl"
import json, sys
skip, clean = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
assert len(skip) == 12 and skip[5]["grad_norm"] is None, skip[5]
assert [r["loss"] for r in skip[:6]] == [r["loss"] for r in clean[:6]] and skip[6]["loss"] != clean[6]["loss"]
PY
[[ -f $work/skip/model/model.safetensors && ! -e $work/skip/diverged.json ]] || fail "skip: the run did not finish"
rc=0
COCONUT_TRAIN_FAULT=nan_weights@5 "$bin" train "${args[@]}" --set run.dir="$work/skip3" --set checkpoint.every_steps=0 \
  --set train.skip_nonfinite_steps=2 >"$work/skip3.log" 2>&1 || rc=$?
[[ $rc == 3 && $(field skip3 step) == 8 ]] || fail "skip3: exit $rc: $(tail -n 5 "$work/skip3.log")"
field skip3 why | grep -q "the loss of step 8 .* is nan .*; the step was not applied (3 such steps in a row)" ||
  fail "skip3: why: $(field skip3 why)"
pass "train.skip_nonfinite_steps: a skipped step leaves step 5's weights and optimizer count; the third NaN in a row stops"

# ---- 6. a sweep: one grid point diverges, the other finishes ---------------------------
cat >"$work/sweep.yaml" <<EOF
base: $configs/prosqa_tiny.yaml
out: $work/sweep
grid:
  - key: train.epochs
    values: [1, 3]
set: [curriculum.epochs_per_stage=1, data.generate_train=64, data.generate_valid=8, train.batch_size=16,
      model.d_model=32, eval.max_new_tokens=24, run.threads=1]
EOF
COCONUT_TRAIN_FAULT=nan_weights@5 "$bin" sweep "$work/sweep.yaml" --out "$work/sweep" >"$work/sweep.log" 2>&1 ||
  fail "sweep exited $?: $(cat "$work/sweep.log")"
python3 - "$work/sweep/results.csv" <<'PY' || fail "sweep results: $(cat "$work/sweep/results.csv")"
import csv, sys
rows = {r["run"]: r["status"] for r in csv.DictReader(open(sys.argv[1]))}
assert rows == {"epochs-1": "trained", "epochs-3": "diverged (step 6, loss nan)"}, rows
PY
COCONUT_TRAIN_FAULT=nan_weights@5 "$bin" sweep "$work/sweep.yaml" --out "$work/sweep" >"$work/sweep2.log" 2>&1 ||
  fail "second sweep exited $?: $(cat "$work/sweep2.log")"
grep -q "epochs-3: skipped, diverged earlier" "$work/sweep2.log" || fail "second sweep: $(cat "$work/sweep2.log")"
grep -q "| diverged (step 6, loss nan) |" "$work/sweep/results.md" || fail "results.md: $(cat "$work/sweep/results.md")"
pass "a sweep records the diverged point and skips it when rerun"
# A sweep killed alone leaves its run training, which may diverge before the rerun: the
# attempt is open (no end line). The rerun skips the run and closes the attempt at the
# last write of its train.log, so its wall time still counts it.
attempts=$work/sweep/epochs-3/sweep_attempts.jsonl
head -n 1 "$attempts" >"$attempts.open" && mv "$attempts.open" "$attempts"
COCONUT_TRAIN_FAULT=nan_weights@5 "$bin" sweep "$work/sweep.yaml" --out "$work/sweep" >"$work/sweep3.log" 2>&1 ||
  fail "third sweep exited $?: $(cat "$work/sweep3.log")"
python3 - "$attempts" "$work/sweep/results.csv" <<'PY' || fail "the open attempt of the diverged run (see above)"
import csv, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 2 and "start" in lines[0] and lines[1].get("estimated") is True, lines
wall = {r["run"]: r for r in csv.DictReader(open(sys.argv[2]))}["epochs-3"]
print("diverged run's wall time after the open attempt was closed:", {k: v for k, v in wall.items() if "wall" in k})
assert any("wall" in k and v not in ("", "-") for k, v in wall.items()), wall
PY
pass "a diverged run's open attempt is closed when the sweep skips it"
