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
#   mid_eval one process, SIGTERM during epoch 0's evaluation: stops before epoch 1's
#            first step
#   end      one process, SIGTERM after the last step, during the final evaluation (200
#            items): the checkpoint of the last step is saved, and the rerun evaluates
#            and exports what the uninterrupted run did
# and `coconut sweep`: SIGTERM to the sweep reaches its running child, the sweep stops
# with code 75 without starting the next run, and a rerun resumes and finishes both.
# Last, `busy`: a second training started in a running run's directory stops at once.
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
# stopped_run NAME NP SIGNAL TARGET [OPTIONS...]: starts the run, sends SIGNAL to TARGET
# (self: the started process; rank1: the second coconut process under mpirun) after 10
# steps, and expects exit code 75 and a checkpoint of the step every rank names.
stopped_run() {
  local name=$1 np=$2 signal=$3 target=$4 rc=0
  shift 4
  start_run "$name" "$np" "$@"
  wait_lines "$tmp/$name/steps.jsonl" 10 "$name"
  local pid=$run_pid
  if [ "$target" = rank1 ]; then
    pid=$(pgrep -P "$run_pid" -f "run.dir=$tmp/$name" | sort -n | sed -n 2p)
    [ -n "$pid" ] || fail "$name: no second rank process under mpirun $run_pid"
  fi
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

for pair in one:full grid:full_grid rank1:full_grid; do
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

# term_in_evaluation NAME STEPS [OPTIONS...]: starts a one-process run, sends SIGTERM
# 0.3 s after its STEPS-th step (while the evaluation after it decodes: 200 items of 64
# tokens take longer) and expects exit code 75.
term_in_evaluation() {
  local name=$1 steps=$2 rc=0
  shift 2
  start_run "$name" 1 "$@"
  wait_lines "$tmp/$name/steps.jsonl" "$steps" "$name"
  sleep 0.3
  kill -TERM "$run_pid"
  wait "$run_pid" || rc=$?
  [ "$rc" = 75 ] || fail "$name: exit code $rc after SIGTERM, expected 75: $(tail -n 20 "$tmp/$name.log")"
}

# end: the signal once every step is done, while the final evaluation decodes.
end=(--set data.generate_valid=200 --set eval.max_new_tokens=64)
train_run full_end 1 "${end[@]}"
term_in_evaluation end 120 "${end[@]}"
[ "$(cat "$tmp/end/checkpoints/latest")" = step-00000120 ] || fail "end: the latest checkpoint is not that of step 120"
[ ! -e "$tmp/end/model" ] || fail "end: a stopped run must not export a model"
train_run end 1 "${end[@]}" --resume auto
cmp -s "$tmp/end/model/model.safetensors" "$tmp/full_end/model/model.safetensors" || fail "end: the model differs"
cmp -s "$tmp/end/eval_valid.json" "$tmp/full_end/eval_valid.json" || fail "end: eval_valid.json differs"
cmp -s "$tmp/end/steps.jsonl" "$tmp/full_end/steps.jsonl" || fail "end: steps.jsonl differs"
pass "end: stopped after the last step ($(grep -o "SIGTERM received: stopped after step [0-9]* (epoch [0-9]*" "$tmp/end.log")), the rerun exported the same model and evaluation"

# mid_eval: the signal once epoch 0's steps are done, while its evaluation decodes: the
# run stops after that evaluation, before epoch 1's first step, with a checkpoint of step
# 60; the rerun equals the uninterrupted run (steps, epoch rows, evaluation, model).
mid=(--set data.generate_valid=200 --set eval.max_new_tokens=64 --set eval.every_epochs=1)
train_run full_mid 1 "${mid[@]}"
term_in_evaluation mid 60 "${mid[@]}"
[ "$(wc -l <"$tmp/mid/steps.jsonl")" = 60 ] || fail "mid: $(wc -l <"$tmp/mid/steps.jsonl") steps, expected 60"
[ "$(cat "$tmp/mid/checkpoints/latest")" = step-00000060 ] || fail "mid: the latest checkpoint is not that of step 60"
grep -q "SIGTERM received: stopped after step 60 (epoch 1, batch 0)" "$tmp/mid.log" ||
  fail "mid: not stopped at epoch 1's start: $(grep received "$tmp/mid.log")"
train_run mid 1 "${mid[@]}" --resume auto
for f in steps.jsonl eval_valid.json model/model.safetensors; do
  cmp -s "$tmp/mid/$f" "$tmp/full_mid/$f" || fail "mid: $f differs from the uninterrupted run's"
done
python3 - "$tmp/mid" "$tmp/full_mid" <<'PY' || fail "mid: the epoch rows (loss, accuracy) differ"
import json, sys
a, b = ([(r["epoch"], r["loss"], r.get("valid_accuracy")) for r in map(json.loads, open(f"{d}/metrics.jsonl"))]
        for d in sys.argv[1:])
sys.exit(0 if a == b and len(a) == 2 else 1)
PY
pass "mid_eval: stopped after epoch 0's evaluation at step 60; resumed, steps, epoch rows, evaluation and model equal"

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
