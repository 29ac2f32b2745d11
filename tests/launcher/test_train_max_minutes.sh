#!/usr/bin/env bash
# train.max_minutes (the per-run time limit tools/reproduce.sh gives every run):
#  1. a limit already passed after the first epoch ends the run there: one epoch row in
#     metrics.jsonl, the final evaluation (eval_valid.json) and the model are written,
#     the log says why, and the exit code is 0;
#  2. a limit far away changes nothing: every epoch runs, and the first epoch's step losses
#     equal those of run 1 (the limit only decides where training ends);
#  3. the limit counts the training of earlier attempts: a checkpoint saves the training
#     time so far, a resumed attempt adds to it, and a limit that the first attempt alone
#     passed ends the resumed run after its first epoch, though its own clock is far
#     from the limit;
#  4. a stop signal during the evaluation of the epoch the limit made the last: the rerun
#     evaluates that epoch and ends there, as the uninterrupted run did (no more training);
#  5. a stop signal during the test split of a run the limit ended: the rerun evaluates
#     the test split and ends, without training on (it trained another epoch before
#     session 25; the trainer state now keeps the limit that ended the run), and with the
#     limit raised it trains on.
#   test_train_max_minutes.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$2
mkdir -p "$3"
work=$(mktemp -d "$3/max_minutes.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

run_train() {  # run_train RUN_DIR MAX_MINUTES [EPOCHS [MORE_ARGS...]]: its exit code
  local dir=$1 minutes=$2 epochs=${3:-3}
  "$bin" train "$configs/prosqa_tiny.yaml" --set run.dir="$dir" --set train.max_minutes="$minutes" \
    --set train.epochs="$epochs" --set curriculum.epochs_per_stage=1 --set data.generate_train=32 \
    --set data.generate_valid=8 --set train.batch_size=16 --set model.d_model=32 \
    --set eval.max_new_tokens=24 --set run.threads=1 "${@:4}" >>"$dir.log" 2>&1
}
train() { run_train "$@" || fail "train $1: $(tail -n 20 "$1.log")"; }  # the same, which must succeed
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

# 3. Attempt 1 trains 8.5 of 12 epochs (2 steps each) and stops after step 17; its
# checkpoint holds its training time t1. Attempt 2 resumes with a limit of 0.9 t1: the
# time behind it already passes it, so epoch 8 is the last. (A clock that restarted would
# stop there only if epoch 8 took longer than about 7 of the earlier epochs.)
training_seconds() {  # training_seconds CHECKPOINT: trainer_state["training_seconds"]
  "$bin" ckpt inspect "$1" | sed -n 's/^  trainer state *//p' |
    python3 -c "import json, sys; print(json.load(sys.stdin)['training_seconds'])"
}
resumed=(--set eval.every_epochs=0 --set checkpoint.at_epoch_end=true)
train "$work/resumed" 1000 12 "${resumed[@]}" --set checkpoint.stop_after_steps=17
t1=$(training_seconds "$work/resumed/checkpoints/step-00000017")
limit=$(python3 -c "import sys; print(float(sys.argv[1]) * 0.9 / 60)" "$t1")
train "$work/resumed" "$limit" 12 "${resumed[@]}" --resume auto
grep -q "reached: epoch 8 (stage .*) of 12 is the last" "$work/resumed.log" ||
  fail "the resumed run did not stop after epoch 8 (attempt 1 trained ${t1} s, limit ${limit} min): $(grep "train.max_minutes (" "$work/resumed.log")"
[[ $(epoch_rows "$work/resumed") == 9 ]] || fail "the resumed run has $(epoch_rows "$work/resumed") epoch rows, expected 9"
t2=$(training_seconds "$work/resumed/checkpoints/step-00000018")
python3 -c "import sys; t1, t2 = map(float, sys.argv[1:]); assert t2 > t1 > 0, (t1, t2)" "$t1" "$t2" ||
  fail "the resumed run's checkpoint holds ${t2} s of training, attempt 1's ${t1} s"
pass "the limit counts the earlier attempt's ${t1} s of training; the resumed run ends after epoch 8"

# stop_in NAME TEXT [MORE_ARGS...]: the limited run (1e-6 minutes, 3 epochs) in $work/NAME,
# sent SIGTERM 0.2 s after its log shows TEXT; its exit code in $rc.
stop_in() {
  local name=$1 text=$2 pid
  shift 2
  run_train "$work/$name" 0.000001 3 "$@" &
  pid=$!
  wait_log "$work/$name.log" "$text" "$name"
  sleep 0.2
  pkill -TERM -f "run.dir=$work/$name " || fail "no run to signal"
  rc=0
  wait $pid || rc=$?
}

# 4. The limit passed after epoch 0; SIGTERM 0.2 s into its evaluation (400 items).
long_eval=(--set data.generate_valid=400)
train "$work/limited" 0.000001 3 "${long_eval[@]}"
stop_in stopped "epoch 0 stage 0: evaluating 400 items" "${long_eval[@]}"
[[ $rc == 75 ]] && grep -q "SIGTERM received: stopped after step 2 (epoch 1, batch 0, during epoch 0's evaluation)" \
  "$work/stopped.log" || fail "stopped: not stopped in epoch 0's evaluation: $(tail -n 3 "$work/stopped.log")"
train "$work/stopped" 0.000001 3 "${long_eval[@]}" --resume auto
[[ $(epoch_rows "$work/stopped") == 1 ]] || fail "the rerun has $(epoch_rows "$work/stopped") epoch rows, expected 1"
for f in steps.jsonl eval_valid.json model/model.safetensors; do
  cmp -s "$work/stopped/$f" "$work/limited/$f" || fail "stopped: $f differs from the uninterrupted run's"
done
pass "a signal during the evaluation of the limit's last epoch: the rerun evaluates it and ends there, as the uninterrupted run"

# 5. The limit passed after epoch 0; SIGTERM 0.2 s into the test split (400 items).
long_test=(--set data.generate_valid=8 --set data.generate_test=400)
train "$work/limited_test" 0.000001 3 "${long_test[@]}"
stop_in stopped_test "generated-test: evaluating the final model" "${long_test[@]}"
[[ $rc == 75 && ! -e $work/stopped_test/eval_test.json ]] ||
  fail "stopped_test: not stopped in the test split (exit $rc): $(tail -n 3 "$work/stopped_test.log")"
cp -r "$work/stopped_test" "$work/raised" && cp "$work/stopped_test.log" "$work/raised.log"
train "$work/stopped_test" 0.000001 3 "${long_test[@]}" --resume auto
grep -q "train.max_minutes (1e-06) had ended this run after epoch 0: no more training" "$work/stopped_test.log" ||
  fail "stopped_test: the rerun does not say the limit had ended the run"
[[ $(epoch_rows "$work/stopped_test") == 1 ]] || fail "the rerun has $(epoch_rows "$work/stopped_test") epoch rows, expected 1"
for f in steps.jsonl eval_valid.json eval_test.json model/model.safetensors; do
  cmp -s "$work/stopped_test/$f" "$work/limited_test/$f" || fail "stopped_test: $f differs from the uninterrupted run's"
done
pass "a signal during the test split of a run the limit ended: the rerun evaluates it and ends, as the uninterrupted run"
# The same stopped run resumed with the limit raised: it trains its other two epochs.
train "$work/raised" 1000 3 "${long_test[@]}" --resume auto
grep -q "train.max_minutes had ended this run after epoch 0 at 1e-06 minutes; now 1000: training on" "$work/raised.log" ||
  fail "raised: the rerun does not say it trains on"
[[ $(epoch_rows "$work/raised") == 3 ]] || fail "raised: $(epoch_rows "$work/raised") epoch rows, expected 3"
pass "the same run resumed with a raised limit trains on to its last epoch"
