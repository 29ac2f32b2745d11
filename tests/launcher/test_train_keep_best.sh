#!/usr/bin/env bash
# eval.keep_best (the paper's protocol: test the model of the best validation accuracy).
# A small ProntoQA Coconut run (max_latent_stage 1: epochs 2-7 are the final stage class)
# whose validation accuracy moves between epochs:
#  1. best_model/best.json names the first epoch of the highest final-stage accuracy in
#     metrics.jsonl; best_model/model.safetensors equals `coconut ckpt export` of the
#     checkpoint after that epoch byte for byte; `coconut eval --best` gives best.json's
#     accuracy again;
#  2. eval_test_best.json equals the eval_test.json of a run trained only up to that epoch;
#  3. stopped mid-run and resumed, the run ends with the same best model and test report;
#  4. two pipeline stages under mpirun: the same checks of 1 against its own checkpoints;
#  5. SIGTERM while the best model's test split decodes (2,000 items: about 1.5 s here):
#     the run stops (exit 75) with a checkpoint of the final weights, not the best model's
#     that are in memory then, and the rerun writes 1's reports.
#   test_train_keep_best.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$2
mkdir -p "$3"
work=$(mktemp -d "$3/keep_best.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass

# 512 items in batches of 16: 32 steps an epoch.
args=("$configs/prosqa_tiny.yaml" --set data.kind=prontoqa --set data.generate_train=512
      --set data.generate_valid=48 --set data.generate_test=2000 --set curriculum.max_latent_stage=1
      --set curriculum.epochs_per_stage=1 --set train.batch_size=16 --set model.d_model=32 --set train.lr=3e-3
      --set eval.max_new_tokens=64 --set run.threads=1)
best=(--set train.epochs=8 --set eval.keep_best=true --set checkpoint.at_epoch_end=true --set checkpoint.keep_last=0)
train() {  # train NAME NP [--set ...]: its output in $work/NAME.log (appended)
  local name=$1 np=$2
  shift 2
  local cmd=("$bin" train "${args[@]}" --set run.dir="$work/$name" "$@")
  [[ $np == 1 ]] || cmd=(mpirun --oversubscribe -np "$np" "${cmd[@]}" --set parallel.pp="$np")
  "${cmd[@]}" >>"$work/$name.log" 2>&1 || fail "$name: $(tail -n 20 "$work/$name.log")"
}
# check_best NAME: best.json against metrics.jsonl, the model against the checkpoint of
# its epoch; prints the best epoch.
check_best() {
  local run=$work/$1
  python3 - "$run" <<'PY' || fail "$1: best.json does not name the best final-stage epoch"
import json, sys
run = sys.argv[1]
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
best = json.load(open(f"{run}/best_model/best.json"))
final = [r for r in rows if r["stage"] >= 2]  # max_latent_stage 1: stages 2.. are alike
assert len(final) == 6, final  # (here the accuracies differ between these epochs; other BLAS kernels may differ)
top = max(r["valid_accuracy"] for r in final)
first = next(r for r in final if r["valid_accuracy"] == top)
assert (best["epoch"], best["stage"], best["step"], best["valid_accuracy"]) == \
    (first["epoch"], first["stage"], first["step"], top), (best, first)
PY
  local epoch step
  epoch=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['epoch'])" "$run/best_model/best.json")
  step=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['step'])" "$run/best_model/best.json")
  "$bin" ckpt export "$run/checkpoints/$(printf 'step-%08d' "$step")" --to "$work/$1_export" >/dev/null 2>&1 ||
    fail "$1: ckpt export of step $step"
  cmp -s "$work/$1_export/model.safetensors" "$run/best_model/model.safetensors" ||
    fail "$1: best_model/model.safetensors differs from the checkpoint of step $step"
  [[ -f $run/eval_test_best.json && -f $run/best_model/tokenizer.txt ]] || fail "$1: no eval_test_best.json or tokenizer"
  echo "$epoch"
}

# ---- 1. the best model is the first epoch of the highest final-stage accuracy ----------
train one 1 "${best[@]}"
epoch=$(check_best one)
"$bin" eval "$work/one" --best >"$work/eval.txt" 2>&1 || fail "eval --best: $(cat "$work/eval.txt")"
python3 - "$work/one" <<'PY' || fail "eval --best: $(cat "$work/eval.txt")"
import json, sys
best = json.load(open(f"{sys.argv[1]}/best_model/best.json"))
again = json.load(open(f"{sys.argv[1]}/eval_generated-valid_best.json"))
assert again["accuracy"] == best["valid_accuracy"], (again["accuracy"], best)
PY
grep -q "eval.keep_best: the best valid accuracy at the final stage, .* was after epoch $epoch" "$work/one.log" ||
  fail "no summary line: $(tail -n 3 "$work/one.log")"
pass "best_model is epoch $epoch's (the checkpoint's bytes); coconut eval --best gives its accuracy again"

# ---- 2. its test report is that of a run that stopped there ----------------------------
train upto 1 --set train.epochs=$((epoch + 1))
cmp -s "$work/one/eval_test_best.json" "$work/upto/eval_test.json" ||
  fail "eval_test_best.json differs from the eval_test.json of a run trained to epoch $epoch"
pass "eval_test_best.json equals the test report of a run trained up to epoch $epoch"

# ---- 3. stopped and resumed --------------------------------------------------------------
train resumed 1 "${best[@]}" --set checkpoint.stop_after_steps=200
train resumed 1 "${best[@]}" --resume auto
for f in best_model/best.json best_model/model.safetensors eval_test_best.json; do
  cmp -s "$work/one/$f" "$work/resumed/$f" || fail "resumed: $f differs"
done
pass "stopped at step 200 and resumed: the same best model and test report"

# ---- 4. two pipeline stages --------------------------------------------------------------
train stages 2 "${best[@]}"
stage_epoch=$(check_best stages)
pass "pp 2: best_model is epoch $stage_epoch's, equal to its checkpoint's bytes"

# ---- 5. a stop signal during the best model's test evaluation ----------------------------
# No epoch-end checkpoints here, so the stop's save is the run's only one.
stop=("${best[@]}" --set checkpoint.at_epoch_end=false)
"$bin" train "${args[@]}" "${stop[@]}" --set run.dir="$work/stop" >"$work/stop.log" 2>&1 &
pid=$!
wait_log "$work/stop.log" "evaluating the best generated-valid model" stop
sleep 0.2
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[[ $rc == 75 && ! -e $work/stop/eval_test_best.json ]] || fail "stop: exit code $rc: $(tail -n 5 "$work/stop.log")"
latest=$(cat "$work/stop/checkpoints/latest")
"$bin" ckpt export "$work/stop/checkpoints/$latest" --to "$work/stop_export" >/dev/null 2>&1 || fail "stop: ckpt export"
cmp -s "$work/stop_export/model.safetensors" "$work/one/model/model.safetensors" ||
  fail "stop: the checkpoint $latest does not hold the final weights"
train stop 1 "${stop[@]}" --resume auto
for f in eval_test.json eval_test_best.json best_model/model.safetensors model/model.safetensors; do
  cmp -s "$work/one/$f" "$work/stop/$f" || fail "stop: $f differs from the uninterrupted run's"
done
pass "SIGTERM during the best model's test evaluation: stopped with the final weights in $latest; the rerun wrote the same reports"
