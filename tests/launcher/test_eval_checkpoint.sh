#!/usr/bin/env bash
# `coconut eval --checkpoint`: a run's checkpoint evaluated at the stage of its epoch,
# also when the run has not finished. A running-sum run (stage 0, then stage 1) on 2
# pipeline ranks, so that each checkpoint is two ranks' shards, saved at each epoch end:
#   - the last checkpoint gives the final model's report byte for byte (also with the
#     learned <eot> classifier, one process);
#   - the epoch-0 checkpoint (by step number) is evaluated at stage 0 and gives the
#     accuracy the trainer measured after epoch 0 (metrics.jsonl);
#   - a run without its model/ (stopped, or still training) is refused by plain eval
#     with the hint, and --checkpoint latest still reads it;
#   - bad values: a step never saved, a checkpoint of another model, --best with it.
#   test_eval_checkpoint.sh COCONUT_BINARY TEMP_DIR
set -euo pipefail

bin=$1
mkdir -p "$2"
work=$(mktemp -d "$2/eval_checkpoint.XXXXXX")
trap 'rm -rf "$work"' EXIT

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
run=$work/run
common=(--set data.generate_train=640 --set data.generate_valid=40 --set train.epochs=2
        --set curriculum.epochs_per_stage=1 --set run.threads=1 --set checkpoint.at_epoch_end=true)
mpirun --oversubscribe -np 2 "$bin" train "$here/configs/running_sum_tiny.yaml" --set run.dir="$run" "${common[@]}" \
  --set parallel.pp=2 --set train.micro_batch_size=8 >"$work/train.txt" 2>&1 ||
  fail "training on 2 pipeline ranks: $(tail -n 20 "$work/train.txt")"
# 640 items in batches of 32: epoch ends at steps 20 and 40.
for step in 00000020 00000040; do
  [[ -f $run/checkpoints/step-$step/manifest.pb ]] || fail "no checkpoint step-$step: $(ls "$run/checkpoints")"
done
pass "a run on 2 pipeline ranks with a checkpoint at each epoch end"

# ---- the last checkpoint = the final model -----------------------------------------------
"$bin" eval "$run" >"$work/final.txt" 2>"$work/err.txt" || fail "eval of the final model: $(cat "$work/err.txt")"
"$bin" eval "$run" --checkpoint latest >"$work/latest.txt" 2>"$work/err.txt" ||
  fail "eval --checkpoint latest: $(cat "$work/err.txt")"
grep -q "^run $run (its checkpoint $run/checkpoints/step-00000040, step 40): method coconut, c=1, stage 1; 40 items" \
  "$work/latest.txt" || fail "eval --checkpoint latest header: $(cat "$work/latest.txt")"
grep -q "stage 1; 40 items" "$work/final.txt" || fail "eval of the final model: $(cat "$work/final.txt")"
[[ -f $run/eval_generated-valid_step-00000040.json ]] || fail "no report eval_generated-valid_step-00000040.json"
cmp -s "$run/eval_generated-valid.json" "$run/eval_generated-valid_step-00000040.json" ||
  fail "the last checkpoint's report differs from the final model's"
diff <(grep -v '^run \|^report' "$work/final.txt") <(grep -v '^run \|^report' "$work/latest.txt") ||
  fail "the last checkpoint's printout differs from the final model's"
pass "eval --checkpoint latest = the final model (report byte for byte)"

# With the learned <eot> classifier, which the checkpoint holds as well (one process).
eot=$work/eot
"$bin" train "$here/configs/running_sum_tiny.yaml" --set run.dir="$eot" "${common[@]}" \
  --set curriculum.eot_classifier=true >"$work/eot.txt" 2>&1 || fail "training with the <eot> classifier: $(tail "$work/eot.txt")"
"$bin" eval "$eot" >"$work/eot_final.txt" && "$bin" eval "$eot" --checkpoint latest >"$work/eot_latest.txt" ||
  fail "eval of the <eot> run"
grep -q "^<eot> by the learned classifier: mean thoughts" "$work/eot_latest.txt" || fail "eot: $(cat "$work/eot_latest.txt")"
cmp -s "$eot/eval_generated-valid.json" "$eot/eval_generated-valid_step-00000040.json" ||
  fail "<eot> classifier: the last checkpoint's report differs from the final model's"
pass "eval --checkpoint latest with the <eot> classifier = the final model"

# A run started from a model (model.init_from, whose shape the checkpoint records, not the
# run's model.* keys: d_model 32 is not the model's 64): the same.
from=$work/from
"$bin" train "$here/configs/running_sum_tiny.yaml" --set run.dir="$from" --set model.init_from="$run/model" \
  --set model.d_model=32 \
  --set data.generate_train=64 --set data.generate_valid=8 --set train.epochs=1 --set run.threads=1 \
  --set checkpoint.at_epoch_end=true >"$work/from.txt" 2>&1 || fail "training from run/model: $(tail "$work/from.txt")"
"$bin" eval "$from" >/dev/null && "$bin" eval "$from" --checkpoint latest >/dev/null || fail "eval of the init_from run"
cmp -s "$from/eval_generated-valid.json" "$from/eval_generated-valid_step-00000002.json" ||
  fail "model.init_from run: the last checkpoint's report differs from the final model's ($(ls "$from"))"
pass "eval --checkpoint latest of a run started from a model (model.init_from) = the final model"

# ---- the epoch-0 checkpoint: stage 0, the accuracy the trainer measured then ------------
"$bin" eval "$run" --checkpoint 20 --out "$work/step20.json" >"$work/step20.txt" 2>"$work/err.txt" ||
  fail "eval --checkpoint 20: $(cat "$work/err.txt")"
grep -q "(its checkpoint $run/checkpoints/step-00000020, step 20): method coconut, c=1, stage 0; 40 items" \
  "$work/step20.txt" || fail "eval --checkpoint 20 header: $(cat "$work/step20.txt")"
python3 - "$run/metrics.jsonl" "$work/step20.json" "$run/eval_generated-valid.json" <<'EOF' || fail "epoch 0's accuracy"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
epoch0 = [r for r in rows if r.get("epoch") == 0 and "valid_accuracy" in r and "loss" in r]
assert len(epoch0) == 1, rows
step20, final = (json.load(open(p)) for p in sys.argv[2:])
assert step20["accuracy"] == epoch0[0]["valid_accuracy"], (step20["accuracy"], epoch0[0])
# Not the final model's answers: other weights and another stage's prompt.
assert [i["generated"] for i in step20["items"]] != [i["generated"] for i in final["items"]]
print(f"epoch 0: accuracy {step20['accuracy']} (trainer and --checkpoint 20); final {final['accuracy']}")
EOF
# ckpt inspect names both stages of such a boundary checkpoint: the next epoch's and the trained one.
"$bin" ckpt inspect "$run/checkpoints/step-00000020" | grep -qF "stage            1 (the weights trained at stage 0)" ||
  fail "ckpt inspect: $("$bin" ckpt inspect "$run/checkpoints/step-00000020" | grep stage)"
mpirun --oversubscribe -np 2 "$bin" eval "$run" --checkpoint 20 --out "$work/step20_np2.json" >/dev/null 2>"$work/err.txt" ||
  fail "mpirun -np 2 eval --checkpoint 20: $(cat "$work/err.txt")"
cmp -s "$work/step20.json" "$work/step20_np2.json" || fail "mpirun -np 2 eval --checkpoint 20 differs from one process"
pass "eval --checkpoint 20: stage 0, the trainer's epoch-0 accuracy; 2 ranks = one process"

# ---- a run without its final model (stopped or in progress) ------------------------------
partial=$work/partial
cp -r "$run" "$partial"
rm -rf "$partial/model" "$partial"/eval_*.json
expect 1 "is not a finished run: $partial/model/model.safetensors is missing (--checkpoint latest reads" \
  "$bin" eval "$partial"
"$bin" eval "$partial" --checkpoint latest --out "$work/partial.json" >/dev/null 2>"$work/err.txt" ||
  fail "eval --checkpoint latest without model/: $(cat "$work/err.txt")"
cmp -s "$work/partial.json" "$run/eval_generated-valid.json" || fail "without model/: the report differs"
# A checkpoint path works as well (a checkpoint directory, or a root: its newest).
# (With a trailing slash, as shells complete it: the report is still named by the step.)
"$bin" eval "$partial" --checkpoint "$partial/checkpoints/step-00000020/" >/dev/null
cmp -s "$partial/eval_generated-valid_step-00000020.json" "$work/step20.json" ||
  fail "--checkpoint PATH/ differs from --checkpoint 20 (or its report is misnamed: $(ls "$partial"))"
pass "a run without model/: plain eval refused with the hint, --checkpoint latest / PATH read"

# ---- bad values --------------------------------------------------------------------------
expect 1 "--checkpoint 30: no committed checkpoint '$run/checkpoints/step-00000030'" \
  "$bin" eval "$run" --checkpoint 30
expect 2 "--best and --checkpoint name two models: give one" "$bin" eval "$run" --best --checkpoint latest
expect 1 "--checkpoint: '$work/nowhere' is not a directory" "$bin" eval "$run" --checkpoint "$work/nowhere"
mkdir -p "$work/empty"
expect 1 "--checkpoint: '$work/empty' is neither a committed checkpoint (no manifest.pb) nor a checkpoint root" \
  "$bin" eval "$run" --checkpoint "$work/empty"
# Another model's checkpoint (d_model 32): refused before any weight is read.
other=$work/other
"$bin" train "$here/configs/running_sum_tiny.yaml" --set run.dir="$other" --set model.d_model=32 \
  --set data.generate_train=64 --set data.generate_valid=4 --set train.epochs=1 --set run.threads=1 \
  --set checkpoint.at_epoch_end=true >"$work/other.txt" 2>&1 || fail "training the other run: $(tail "$work/other.txt")"
expect 1 "checkpoint of another model configuration" "$bin" eval "$run" --checkpoint "$other/checkpoints"
norun=$work/norun
mkdir -p "$norun"
expect 1 "'$norun' is not a run directory: $norun/config.yaml is missing" "$bin" eval "$norun" --checkpoint latest
pass "bad --checkpoint values: named, exit 1 (2 for the usage error)"
