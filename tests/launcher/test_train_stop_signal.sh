#!/usr/bin/env bash
# Stopping on a signal (runtime/stop_signals.h): `coconut train` that receives SIGTERM or
# SIGUSR1 mid-run must stop every rank after the same step, save a checkpoint of that
# step and exit with code 75; `--resume auto` must then finish the run with the per-step
# losses (RUN_DIR/steps.jsonl) and per-epoch means (metrics.jsonl) of the uninterrupted
# run, bit for bit, and the same exported model. Cases:
#   one      one process, SIGTERM to it
#   grid     mpirun -np 2 (pp 2), SIGUSR1 to mpirun, which forwards it to both ranks
#   rank1    mpirun -np 2 (pp 2), SIGTERM to rank 1's process only: rank 0 learns it from
#            the agreement after the step and stops with it
#   twice    one process, SIGTERM again every 10 ms while it stops
#   mid, mid_grid, end   SIGTERM during a validation evaluation (one process in epoch 0's
#            or the last one's, 2 pipeline ranks with the signal to rank 1): it stops
#            before its next batch, the checkpoint holds the epoch unreported, and the
#            rerun evaluates it first
#   test     one process, SIGTERM while the test split decodes: stopped with the model
#            exported and no test report; the rerun writes it
# and `coconut sweep`: SIGTERM to the sweep reaches its running child, the sweep stops
# with code 75 without starting the next run, and a rerun resumes and finishes both.
# Then `startup`: SIGTERM before the first step (while the data is made) exits 75 having
# saved nothing, and the rerun is the uninterrupted run. Last, `busy`: a second training
# started in a running run's directory stops at once.
# The signal is sent once the run has written a few steps, so it lands mid-epoch.
# usage: test_train_stop_signal.sh COCONUT_BINARY CONFIG_DIR TMP_DIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bin=$1 configs=$2 tmp=$3/train_stop_signal
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
# 2 epochs of 60 steps: long enough to be signalled mid-run, a few seconds in all.
args=("$configs/prosqa_tiny.yaml" --set train.epochs=2 --set curriculum.epochs_per_stage=1
      --set data.generate_train=240 --set data.generate_valid=4 --set train.batch_size=4
      --set model.dropout=0.1 --set eval.every_epochs=0 --set run.threads=1)
grid=(--set parallel.pp=2 --set train.micro_batch_size=2)

# start_run NAME NP [OPTIONS...]: starts `coconut train` (one process or mpirun -np NP) in
# the background; its pid (of coconut or mpirun) in $run_pid.
start_run() {
  local name=$1 np=$2
  shift 2
  if [ "$np" = 1 ]; then "$bin" train "${args[@]}" --set run.dir="$tmp/$name" "$@" >>"$tmp/$name.log" 2>&1 &
  else mpirun --oversubscribe -np "$np" "$bin" train "${args[@]}" --set run.dir="$tmp/$name" "$@" >>"$tmp/$name.log" 2>&1 &
  fi
  run_pid=$!
}
# rank_pid NAME K: the pid of the K-th (1-based) coconut process of run NAME under mpirun.
rank_pid() {
  local pid
  pid=$(pgrep -P "$run_pid" -f "run.dir=$tmp/$1" | sort -n | sed -n "$2p")
  [ -n "$pid" ] || fail "$1: no rank process $2 under mpirun $run_pid"
  echo "$pid"
}
# stopped_run NAME NP SIGNAL TARGET [OPTIONS...]: starts the run, sends SIGNAL to TARGET
# (self: the started process; rank1: the second coconut process under mpirun) after 10
# steps, and expects exit code 75 and a checkpoint of the step every rank names.
stopped_run() {
  local name=$1 np=$2 signal=$3 target=$4 rc=0
  shift 4
  start_run "$name" "$np" "$@"
  wait_lines "$tmp/$name/steps.jsonl" 10 "$name"
  local pid=$run_pid
  [ "$target" = self ] || pid=$(rank_pid "$name" 2)
  kill -"$signal" "$pid"
  wait "$run_pid" || rc=$?
  [ "$rc" = 75 ] || fail "$name: exit code $rc after SIG$signal, expected 75: $(tail -n 20 "$tmp/$name.log")"
  local steps
  steps=$(grep -o "SIG$signal received: stopped after step [0-9]*" "$tmp/$name.log" | grep -o "[0-9]*$" | sort -u)
  [ "$(grep -c "SIG$signal received: stopped after step" "$tmp/$name.log")" = "$np" ] ||
    fail "$name: not every one of the $np ranks reports the stop: $(grep received "$tmp/$name.log")"
  [ "$(echo "$steps" | wc -l)" = 1 ] || fail "$name: the ranks stopped after different steps: $steps"
  [ "$steps" -ge 10 ] && [ "$steps" -lt 120 ] || fail "$name: stopped after step $steps, expected mid-run"
  [ "$(cat "$tmp/$name/checkpoints/latest")" = "step-$(printf %08d "$steps")" ] ||
    fail "$name: the latest checkpoint is not that of step $steps"
  [ ! -e "$tmp/$name/model" ] || fail "$name: a stopped run must not export a model"
  pass "$name: SIG$signal to $target: every rank stopped after step $steps with a checkpoint, exit 75"
}

train_run full 1
stopped_run one 1 TERM self
train_run one 1 --resume auto
train_run full_grid 2 "${grid[@]}"
stopped_run grid 2 USR1 self "${grid[@]}" --set checkpoint.async=true
train_run grid 2 "${grid[@]}" --set checkpoint.async=true --resume auto
stopped_run rank1 2 TERM rank1 "${grid[@]}"
train_run rank1 2 "${grid[@]}" --resume auto
# twice: SIGTERM, then SIGTERM again every 10 ms while the run saves its checkpoint and
# exits (until session 25 the handlers were restored once the training returned, and a
# later signal killed the process: exit 143, which a job script does not requeue).
start_run twice 1
wait_lines "$tmp/twice/steps.jsonl" 10 twice
kill -TERM "$run_pid"
for _ in $(seq 500); do kill -TERM "$run_pid" 2>/dev/null || break; sleep 0.01; done  # at most 5 s
rc=0
wait "$run_pid" || rc=$?
[ "$rc" = 75 ] || fail "twice: exit code $rc after repeated SIGTERMs, expected 75: $(tail -n 5 "$tmp/twice.log")"
pass "twice: more SIGTERMs while the run stops: exit 75"
train_run twice 1 --resume auto

for pair in one:full grid:full_grid rank1:full_grid twice:full; do
  name=${pair%%:*} ref=${pair##*:}
  cmp -s "$tmp/$name/steps.jsonl" "$tmp/$ref/steps.jsonl" || python3 - "$tmp/$name" "$tmp/$ref" <<'PY' ||
import json, sys
a, b = ([(r["step"], r["loss"]) for r in map(json.loads, open(f"{d}/steps.jsonl"))] for d in sys.argv[1:])
sys.exit(0 if a == b and len(a) == 120 else 1)
PY
    fail "$name: per-step losses differ from $ref's"
  python3 - "$tmp/$name" "$tmp/$ref" <<'PY' || fail "$name: per-epoch losses differ from $ref's"
import json, sys
a, b = ([(r["epoch"], r["loss"]) for r in map(json.loads, open(f"{d}/metrics.jsonl"))] for d in sys.argv[1:])
sys.exit(0 if a == b and len(a) == 2 else 1)
PY
  cmp -s "$tmp/$name/model/model.safetensors" "$tmp/$ref/model/model.safetensors" ||
    fail "$name: the exported model differs from $ref's"
  grep -q "resumed from" "$tmp/$name.log" || fail "$name: the second run did not resume"
  pass "$name: resumed to the end, 120 per-step losses, 2 epoch means and the model equal $ref's bit for bit"
done
# The resumed run's wall time covers both attempts: the stopped one up to its checkpoint
# (the time the stop message names) and the resumed one.
python3 - "$tmp/one.log" "$tmp/one" <<'PY' || fail "one: the resumed run's wall time does not cover both attempts"
import re, sys
log, run = open(sys.argv[1]).read(), sys.argv[2]
stop = float(re.search(r"SIGTERM received: stopped after step \d+ \(epoch \d+, batch \d+\) at ([\d.]+) s", log)[1])
row = [l for l in log.splitlines() if l.startswith(f"| {run} |")][-1]
wall = float(row.strip("| ").split("|")[-1])
m = re.search(r"\(wall s over (\d+) attempts: this one ([\d.]+) s, the earlier ones ([\d.]+) s", log)
attempts, this, earlier = int(m[1]), float(m[2]), float(m[3])
print(f"stopped at {stop} s; resumed: wall {wall} s = {this} + {earlier} over {attempts} attempts")
sys.exit(0 if attempts == 2 and stop > 0 and abs(earlier - stop) <= 0.2 and abs(wall - this - earlier) <= 0.15 else 1)
PY
pass "one: the resumed run's wall time counts the stopped attempt up to its checkpoint"

# term_in_evaluation NAME NP TARGET EPOCH [OPTIONS...]: starts the run, sends SIGTERM to
# TARGET (self, or rank1 under mpirun) 0.2 s into epoch EPOCH's evaluation (100 items of
# 64 tokens take longer) and expects exit code 75, the evaluation interrupted, and a stop
# that names it on every rank.
term_in_evaluation() {
  local name=$1 np=$2 target=$3 epoch=$4 rc=0
  shift 4
  start_run "$name" "$np" "$@"
  wait_log "$tmp/$name.log" "epoch $epoch stage $epoch: evaluating 100 items" "$name"
  sleep 0.2
  local pid=$run_pid
  [ "$target" = self ] || pid=$(rank_pid "$name" 2)
  kill -TERM "$pid"
  wait "$run_pid" || rc=$?
  [ "$rc" = 75 ] || fail "$name: exit code $rc after SIGTERM, expected 75: $(tail -n 20 "$tmp/$name.log")"
  ! grep -q "epoch $epoch stage $epoch: loss .* accuracy" "$tmp/$name.log" ||
    fail "$name: epoch $epoch's evaluation finished: $(grep accuracy "$tmp/$name.log")"
  [ "$(grep -c "the evaluation was interrupted by a stop signal" "$tmp/$name.log")" = "$np" ] &&
    [ "$(grep -c "SIGTERM received: stopped after step $((20 * epoch + 20)) (epoch $((epoch + 1)), batch 0, during \
epoch $epoch's evaluation)" "$tmp/$name.log")" = "$np" ] ||
    fail "$name: not stopped in epoch $epoch's evaluation on every rank: $(grep -E "received|interrupted" "$tmp/$name.log")"
}
# same_epoch_rows NAME REF: the runs' metrics.jsonl rows (2) have the same epoch, stage,
# step, loss and validation accuracy (not the timings); the last one has an accuracy.
same_epoch_rows() {
  python3 - "$tmp/$1" "$tmp/$2" <<'PY' || fail "$1: the epoch rows (loss, accuracy) differ from $2's"
import json, sys
keys = ("epoch", "stage", "step", "loss", "valid_accuracy")
a, b = ([tuple(r.get(k) for k in keys) for r in map(json.loads, open(f"{d}/metrics.jsonl"))] for d in sys.argv[1:])
sys.exit(0 if a == b and len(a) == 2 and a[1][4] is not None else 1)
PY
}

# A signal while a validation split decodes stops the run before the evaluation's next
# batch, with a checkpoint that holds the epoch unreported; the rerun evaluates it first
# and equals the uninterrupted run (steps, epoch rows with their accuracies, evaluation,
# model). 80 items, 20 steps an epoch; evaluation after every epoch, 100 items:
#   mid      one process, in epoch 0's evaluation: stopped before epoch 1's first step
#   mid_grid the same under mpirun -np 2 (pp 2, a batch in flight on each stage), the
#            signal to rank 1 only
#   end      one process, in the last evaluation (after every step): the rerun only
#            evaluates and exports
short=(--set data.generate_train=80)
eval_args=("${short[@]}" --set data.generate_valid=100 --set eval.max_new_tokens=64 --set eval.every_epochs=1)
train_run full_eval 1 "${eval_args[@]}"
train_run full_eval_grid 2 "${eval_args[@]}" "${grid[@]}"
for case in mid:1:self:0 mid_grid:2:rank1:0 end:1:self:1; do
  IFS=: read -r name np target epoch <<<"$case"
  more=() ref=full_eval
  [ "$np" = 1 ] || more=("${grid[@]}") ref=full_eval_grid
  term_in_evaluation "$name" "$np" "$target" "$epoch" "${eval_args[@]}" "${more[@]}"
  steps=$((20 * epoch + 20))
  [ "$(wc -l <"$tmp/$name/steps.jsonl")" = "$steps" ] || fail "$name: $(wc -l <"$tmp/$name/steps.jsonl") steps, expected $steps"
  [ "$(cat "$tmp/$name/checkpoints/latest")" = "step-$(printf %08d "$steps")" ] ||
    fail "$name: the latest checkpoint is not that of step $steps"
  [ "$(cat "$tmp/$name/metrics.jsonl" 2>/dev/null | wc -l)" = "$epoch" ] || fail "$name: epoch $epoch's row was written before its evaluation"
  [ ! -e "$tmp/$name/model" ] || fail "$name: a stopped run must not export a model"
  train_run "$name" "$np" "${eval_args[@]}" "${more[@]}" --resume auto
  for f in steps.jsonl eval_valid.json model/model.safetensors; do
    cmp -s "$tmp/$name/$f" "$tmp/$ref/$f" || fail "$name: $f differs from the uninterrupted run's"
  done
  same_epoch_rows "$name" "$ref"
  pass "$name: stopped in epoch $epoch's evaluation at step $steps ($np rank(s), SIGTERM to $target); resumed, steps, epoch rows, evaluation and model equal"
done

# test: the signal while the test split decodes (100 items, after a 4-item validation):
# the model is exported, then the run stops with a checkpoint of step 40 and no test
# report; the rerun writes the uninterrupted run's.
split=("${short[@]}" --set data.generate_test=100 --set eval.max_new_tokens=64)
train_run full_test 1 "${split[@]}"
start_run test 1 "${split[@]}"
wait_log "$tmp/test.log" "generated-test: evaluating the final model" test
sleep 0.2
kill -TERM "$run_pid"
rc=0
wait "$run_pid" || rc=$?
[ "$rc" = 75 ] || fail "test: exit code $rc after SIGTERM, expected 75: $(tail -n 20 "$tmp/test.log")"
grep -q "SIGTERM received: stopped after step 40 (epoch 2, batch 0)" "$tmp/test.log" || fail "test: $(tail -n 5 "$tmp/test.log")"
[ ! -e "$tmp/test/eval_test.json" ] && [ -f "$tmp/test/model/model.safetensors" ] ||
  fail "test: expected the exported model and no test report"
train_run test 1 "${split[@]}" --resume auto
for f in eval_test.json eval_valid.json model/model.safetensors; do
  cmp -s "$tmp/test/$f" "$tmp/full_test/$f" || fail "test: $f differs from the uninterrupted run's"
done
same_epoch_rows test full_test
pass "test: stopped while the test split decoded (checkpoint of step 40, exit 75); the rerun wrote the same test report"

# coconut sweep: two runs; SIGTERM to the sweep while its first run trains.
cat >"$tmp/sweep.yaml" <<EOF
base: $configs/prosqa_tiny.yaml
out: $tmp/sweep
grid:
  - key: run.seed
    values: [0, 1]
set: [train.epochs=2, curriculum.epochs_per_stage=1, data.generate_train=240, data.generate_valid=4,
      train.batch_size=4, model.dropout=0.1, eval.every_epochs=0, run.threads=1]
EOF
"$bin" sweep "$tmp/sweep.yaml" >"$tmp/sweep.log" 2>&1 &
sweep_pid=$!
for _ in $(seq 600); do
  first=$(ls -d "$tmp"/sweep/*/ 2>/dev/null | head -1 || true)
  [ -n "$first" ] && [ -f "$first/steps.jsonl" ] && [ "$(wc -l <"$first/steps.jsonl")" -ge 10 ] && break
  sleep 0.1
done
kill -TERM "$sweep_pid"
rc=0
wait "$sweep_pid" || rc=$?
[ "$rc" = 75 ] || fail "sweep: exit code $rc after SIGTERM, expected 75: $(tail -n 20 "$tmp/sweep.log")"
grep -q "SIGTERM received: stopped after step" "$first/train.log" || fail "sweep: the run did not stop on the signal"
[ "$(ls -d "$tmp"/sweep/*/ | wc -l)" = 1 ] || fail "sweep: a second run started after the stop"
grep -q "rerun" "$tmp/sweep.log" || fail "sweep: no word on how to continue: $(cat "$tmp/sweep.log")"
pass "sweep: SIGTERM stopped the running run (checkpoint, exit 75) and the sweep before its next run"
"$bin" sweep "$tmp/sweep.yaml" >>"$tmp/sweep.log" 2>&1 || fail "sweep: the rerun failed: $(tail -n 20 "$tmp/sweep.log")"
grep -q "interrupted earlier, resuming" "$tmp/sweep.log" || fail "sweep: the rerun did not resume the stopped run"
[ "$(ls "$tmp"/sweep/*/model/model.safetensors | wc -l)" = 2 ] || fail "sweep: the rerun did not finish both runs"
pass "sweep: the rerun resumed the stopped run and finished both"
# ---- a signal during the start-up (before the first step) --------------------------------
# 40,000 generated items make the start-up (generation, tokenization, the measure of every
# micro-batch) last a few seconds; SIGTERM once the log's first line is out lands there.
# The run exits 75 without training or saving anything, and the rerun's first steps are
# an uninterrupted run's. (Before, the default action of SIGTERM killed the process: a job
# preempted while starting was not requeued.)
startup=(--set data.generate_train=40000 --set checkpoint.stop_after_steps=2)
train_run startup_full 1 "${startup[@]}"
start_run startup 1 "${startup[@]}"
wait_log "$tmp/startup.log" "launcher:" startup
kill -TERM "$run_pid"
rc=0
wait "$run_pid" || rc=$?
[ "$rc" = 75 ] || fail "startup: exit code $rc after SIGTERM, expected 75: $(tail -n 5 "$tmp/startup.log")"
grep -q "SIGTERM received before the first step of this attempt (step 0): stopped with nothing new to save" \
  "$tmp/startup.log" || fail "startup: no word of the stop: $(tail -n 5 "$tmp/startup.log")"
[ ! -s "$tmp/startup/steps.jsonl" ] && [ -z "$(ls -A "$tmp/startup/checkpoints" 2>/dev/null)" ] ||
  fail "startup: a step or a checkpoint was written before the stop"
train_run startup 1 "${startup[@]}" --resume auto
[[ "$(step_losses "$tmp/startup/steps.jsonl")" == "$(step_losses "$tmp/startup_full/steps.jsonl")" ]] ||
  fail "startup: the rerun's losses differ from the uninterrupted run's"
pass "startup: SIGTERM before the first step: exit 75 with nothing saved; the rerun = the uninterrupted run"

# ---- a second training in a running run's directory (RUN_DIR/train.lock) ----------------
# It stops at once with exit 1, one process or two ranks under mpirun, naming the first
# run's process; the first run goes on untouched (its losses are the uninterrupted run's),
# and once it has ended the directory takes a new training.
start_run busy 1
first=$run_pid
wait_lines "$tmp/busy/steps.jsonl" 5 "busy"
rc=0
"$bin" train "${args[@]}" --set run.dir="$tmp/busy" >"$tmp/busy2.log" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "run directory '$tmp/busy' is in use by another coconut train (pid $first on host " "$tmp/busy2.log" ||
  fail "busy: a second run in the directory exited $rc: $(tail -n 5 "$tmp/busy2.log")"
rc=0
mpirun --oversubscribe -np 2 "$bin" train "${args[@]}" "${grid[@]}" --set run.dir="$tmp/busy" >"$tmp/busy3.log" 2>&1 || rc=$?
[ "$rc" != 0 ] && [ "$(grep -c "is in use by another coconut train" "$tmp/busy3.log")" = 2 ] ||
  fail "busy: two ranks in the directory exited $rc: $(tail -n 5 "$tmp/busy3.log")"
wait "$first" || fail "busy: the first run failed: $(tail -n 20 "$tmp/busy.log")"
[[ "$(step_losses "$tmp/busy/steps.jsonl")" == "$(step_losses "$tmp/full/steps.jsonl")" ]] ||
  fail "busy: the first run's losses changed while others tried its directory"
train_run busy 1 --resume auto
grep -q "pid [0-9]* on host .* since " "$tmp/busy/train.lock" || fail "busy: train.lock does not name its holder"
pass "busy: a second training in a running run's directory stops at once (exit 1); the first is untouched"

echo "stop signals: all checks passed"
