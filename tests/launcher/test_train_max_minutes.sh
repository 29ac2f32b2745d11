#!/usr/bin/env bash
# train.max_minutes (the per-run time limit tools/reproduce.sh gives every run):
#  1. a limit already passed after the first epoch ends the run there: one epoch row in
#     metrics.jsonl, the final evaluation (eval_valid.json) and the model are written,
#     the log says why, and the exit code is 0;
#  2. a limit far away changes nothing: every epoch runs, and the first epoch's step losses
#     equal those of run 1 (the limit only decides where training ends).
#   test_train_max_minutes.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$2
mkdir -p "$3"
work=$(mktemp -d "$3/max_minutes.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

train() {  # train RUN_DIR MAX_MINUTES
  "$bin" train "$configs/prosqa_tiny.yaml" --set run.dir="$1" --set train.max_minutes="$2" \
    --set train.epochs=3 --set curriculum.epochs_per_stage=1 --set data.generate_train=32 \
    --set data.generate_valid=8 --set train.batch_size=16 --set model.d_model=32 \
    --set eval.max_new_tokens=24 --set run.threads=1 >"$1.log" 2>&1 || fail "train $1: $(tail -n 20 "$1.log")"
}
epoch_rows() {  # rows of metrics.jsonl without a "kind" (per-step rows have "kind": "step")
  python3 -c "import json, sys; print(sum('kind' not in json.loads(l) for l in open(sys.argv[1])))" "$1/metrics.jsonl"
}

train "$work/short" 0.000001
[[ $(epoch_rows "$work/short") == 1 ]] || fail "the time-limited run trained $(epoch_rows "$work/short") epochs, expected 1"
for f in eval_valid.json model/model.safetensors; do [[ -f $work/short/$f ]] || fail "the time-limited run lacks $f"; done
grep -q "train.max_minutes (1e-06) reached: epoch 0 (stage 0) of 3 is the last" "$work/short.log" ||
  fail "no time-limit message: $(grep -i max_minutes "$work/short.log")"
pass "a passed limit ends the run after epoch 0, evaluated and exported"

train "$work/long" 1000
[[ $(epoch_rows "$work/long") == 3 ]] || fail "a far limit trained $(epoch_rows "$work/long") epochs, expected 3"
! grep -q "max_minutes (1000) reached" "$work/long.log" || fail "a far limit logged a stop"
python3 - "$work/short/steps.jsonl" "$work/long/steps.jsonl" <<'PY' || fail "first epoch differs"
import json, sys
short, long = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
first = [r for r in long if r["epoch"] == 0]
assert first and [r["loss"] for r in short] == [r["loss"] for r in first], (short, first)
PY
pass "a far limit runs every epoch; the limit does not change the training"
