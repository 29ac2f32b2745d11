#!/usr/bin/env bash
# Exact resume on the same topology (issue #5): `coconut train` interrupted after step k
# (checkpoint.stop_after_steps saves and stops, as a kill after that save would) and
# resumed with --resume must give the per-step losses (RUN_DIR/steps.jsonl) and the
# per-epoch means (metrics.jsonl) of the uninterrupted run bit for bit, and the
# optimizer reset at each curriculum-stage switch must happen exactly once.
# Two stages of one epoch each, 3 steps per epoch (6 steps), dropout on.
# Cases, one process and pp=2 x dp=2 under mpirun -np 4 (also with the <eot> classifier):
#   mid-stage      stop after step 4 (inside epoch 1), resume auto
#   stage boundary stop after step 3 (the last batch of epoch 0: its row, and the reset
#                  at epoch 1, happen in the resumed run), resume auto
#   epoch-end      one process: resume from the epoch-end checkpoint step-00000003
#                  (saved between epochs 0 and 1) of a run that went on to step 5
#   changed        a resume with another learning rate and more epochs: a warning names them
# usage: test_train_resume.sh COCONUT_BINARY CONFIG_DIR TMP_DIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bin=$1 configs=$2 tmp=$3/train_resume
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
args=("$configs/prosqa_tiny.yaml" --set train.epochs=2 --set curriculum.epochs_per_stage=1
      --set data.generate_train=48 --set data.generate_valid=4 --set train.batch_size=16
      --set train.micro_batch_size=4 --set model.dropout=0.1 --set eval.every_epochs=0 --set run.threads=1)

grid=(--set parallel.pp=2 --set parallel.dp=2 --set parallel.schedule=1f1b)

train_run full 1
train_run mid 1 --set checkpoint.every_steps=2 --set checkpoint.stop_after_steps=4
train_run mid 1 --set checkpoint.every_steps=2 --resume auto
train_run boundary 1 --set checkpoint.stop_after_steps=3
train_run boundary 1 --resume auto
train_run epochend 1 --set checkpoint.at_epoch_end=true --set checkpoint.stop_after_steps=5
train_run epochend 1 --set checkpoint.at_epoch_end=true --resume "$tmp/epochend/checkpoints/step-00000003"
# The learned <eot> classifier (one process): its weights, moments and statistics too.
eot=(--set curriculum.eot_classifier=true)
train_run full_eot 1 "${eot[@]}"
train_run mid_eot 1 "${eot[@]}" --set checkpoint.stop_after_steps=4
train_run mid_eot 1 "${eot[@]}" --resume auto
train_run full_grid 4 "${grid[@]}"
train_run mid_grid 4 "${grid[@]}" --set checkpoint.stop_after_steps=4
train_run mid_grid 4 "${grid[@]}" --resume auto
train_run boundary_grid 4 "${grid[@]}" --set checkpoint.async=true --set checkpoint.stop_after_steps=3
train_run boundary_grid 4 "${grid[@]}" --set checkpoint.async=true --resume auto
train_run full_grid_eot 4 "${grid[@]}" "${eot[@]}"
train_run mid_grid_eot 4 "${grid[@]}" "${eot[@]}" --set checkpoint.stop_after_steps=4
train_run mid_grid_eot 4 "${grid[@]}" "${eot[@]}" --resume auto
# ... and onto one process: rank 0's copy of the classifier serves any topology.
train_run one_from_grid_eot 1 "${eot[@]}" --resume "$tmp/mid_grid_eot/checkpoints/step-00000004"

python3 - "$tmp" <<'PY'
import json, re, sys
tmp = sys.argv[1]
def rows(name, f):
    return [json.loads(l) for l in open(f"{tmp}/{name}/{f}")]
def resets(name):  # epochs at which the log reports an optimizer reset, in log order
    return [int(m.group(1)) for m in re.finditer(r"epoch (\d+): optimizer state reset", open(f"{tmp}/{name}.log").read())]
ok = True
def check(cond, what):
    global ok
    print(("ok  " if cond else "FAIL"), what)
    ok &= bool(cond)
for ref, cases in [("full", ["mid", "boundary", "epochend"]), ("full_eot", ["mid_eot"]),
                   ("full_grid", ["mid_grid", "boundary_grid"]), ("full_grid_eot", ["mid_grid_eot"])]:
    ref_steps = [(r["step"], r["loss"]) for r in rows(ref, "steps.jsonl")]
    ref_epochs = [(r["epoch"], r["loss"]) for r in rows(ref, "metrics.jsonl")]
    check(len(ref_steps) == 6 and len(ref_epochs) == 2, f"{ref}: 6 steps, 2 epochs")
    check(resets(ref) == [1], f"{ref}: optimizer resets at epochs {resets(ref)}")
    for name in cases:
        steps = [(r["step"], r["loss"]) for r in rows(name, "steps.jsonl")]
        epochs = [(r["epoch"], r["loss"]) for r in rows(name, "metrics.jsonl")]
        check(steps == ref_steps, f"{name}: per-step losses equal {ref}'s bit for bit ({len(steps)} steps)")
        check(epochs == ref_epochs, f"{name}: per-epoch losses equal {ref}'s bit for bit {[e[1] for e in epochs]}")
        check("resumed from" in open(f"{tmp}/{name}.log").read(), f"{name}: the second run resumed")
        # Each stage switch resets once: in the first run if it came before the
        # checkpoint, else in the resumed run. For epochend the first run went past the
        # checkpoint (to step 5): its reset at epoch 1 is redone by the resumed run.
        expect = [1, 1] if name == "epochend" else [1]
        check(resets(name) == expect, f"{name}: optimizer resets at epochs {resets(name)}, expected {expect}")
# The classifier's per-epoch statistics continue across the resume.
eot_cols = lambda name: [(r["eot_bce"], r["eot_stop_accuracy"]) for r in rows(name, "metrics.jsonl")]
check(eot_cols("mid_eot") == eot_cols("full_eot"), f"mid_eot: <eot> statistics equal {eot_cols('mid_eot')}")
check(eot_cols("mid_grid_eot") == eot_cols("full_grid_eot"),
      f"mid_grid_eot: <eot> statistics equal {eot_cols('mid_grid_eot')}")
one, grid_ref = rows("one_from_grid_eot", "metrics.jsonl"), rows("full_grid_eot", "metrics.jsonl")[1:]
check(len(one) == 1 and abs(one[0]["loss"] - grid_ref[0]["loss"]) <= 1e-5 * grid_ref[0]["loss"] and
      abs(one[0]["eot_bce"] - grid_ref[0]["eot_bce"]) <= 1e-5 * grid_ref[0]["eot_bce"],
      f"one_from_grid_eot: epoch 1 on one process from pp 2 x dp 2's checkpoint: loss {one[0]['loss']}, "
      f"<eot> BCE {one[0]['eot_bce']} (pp 2 x dp 2: {grid_ref[0]['loss']}, {grid_ref[0]['eot_bce']})")
check(open(f"{tmp}/mid_grid_eot/eot_classifier.txt").read() == open(f"{tmp}/full_grid_eot/eot_classifier.txt").read(),
      "mid_grid_eot: the saved classifier equals full_grid_eot's bit for bit")
sys.exit(0 if ok else 1)
PY

# Bad resumes stop with one message naming the checkpoint: a path that is not a
# directory (exit 2, before anything runs), another model (exit 1).
expect_fail() {  # expect_fail CODE PATTERN NAME [options...]
  local code=$1 pattern=$2 name=$3 rc=0; shift 3
  "$bin" train "${args[@]}" --set run.dir="$tmp/$name" "$@" > "$tmp/$name.log" 2>&1 || rc=$?
  [ "$rc" = "$code" ] && grep -q "$pattern" "$tmp/$name.log" \
    || { echo "FAIL: $name: exit $rc (expected $code) or no '$pattern'"; cat "$tmp/$name.log"; exit 1; }
}
expect_fail 2 "checkpoint.resume: '$tmp/nowhere' is not a directory" bad_path --resume "$tmp/nowhere"
expect_fail 1 "holds another model" bad_model --resume "$tmp/mid/checkpoints" --set model.d_model=32
# A resume with the run's own settings names no change; one with another learning rate
# and more epochs names both (and not the checkpoint or parallel keys it may change).
for name in mid boundary epochend mid_eot mid_grid; do
  ! grep -q "differs from the checkpoint's" "$tmp/$name.log" ||
    fail "$name: a resume with the same settings warns of a change: $(grep differs "$tmp/$name.log")"
done
train_run changed 1 --set checkpoint.stop_after_steps=4
train_run changed 1 --set train.lr=0.002 --set train.epochs=3 --set parallel.schedule=gpipe --resume auto
grep -q "differs from the checkpoint's (the steps up to it used the checkpoint's): train.epochs: 2 -> 3; train.lr: 0.001 -> 0.002$" \
  "$tmp/changed.log" || fail "changed: the warning does not name exactly train.epochs and train.lr: $(grep -i differs "$tmp/changed.log")"
pass "a resume names the settings it changes (train.epochs, train.lr), and only those"
echo "resume on the same topology: all checks passed"
