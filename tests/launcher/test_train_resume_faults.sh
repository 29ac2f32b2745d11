#!/usr/bin/env bash
# Crash safety of training checkpoints (issue #5): a 2-rank run (pp=2) saving every 2
# steps is killed (SIGKILL, through the library's COCONUT_CKPT_FAULT points, see
# parallel/checkpoint.h) during its second save: step 3, the end of epoch 0 and of
# curriculum stage 0 (a milestone):
#   mid_shard_write@1        rank 1 dies with half its shard written
#   before_manifest_rename   rank 0 dies before the checkpoint directory is committed
#   before_latest_update     rank 0 dies after the commit, before `latest` moves
# Then `--resume auto` must load the previous checkpoint (step 2, which `latest` names),
# leave every committed checkpoint in place, and finish with per-step and per-epoch
# losses equal to the uninterrupted run bit for bit. Last, a run killed during its export
# (a half-written model.tmp and model/): the rerun leaves model/ as the full run's.
# usage: test_train_resume_faults.sh COCONUT_BINARY CONFIG_DIR TMP_DIR
set -euo pipefail
bin=$1 configs=$2 tmp=$3/train_resume_faults
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
args=("$configs/prosqa_tiny.yaml" --set train.epochs=2 --set curriculum.epochs_per_stage=1
      --set data.generate_train=48 --set data.generate_valid=4 --set train.batch_size=16
      --set train.micro_batch_size=4 --set model.dropout=0.1 --set eval.every_epochs=0 --set run.threads=1
      --set parallel.pp=2 --set checkpoint.every_steps=2)

train() {  # train RUN_DIR [options...]: the log is appended to
  local dir=$1; shift
  timeout 120 mpirun --oversubscribe -np 2 "$bin" train "${args[@]}" --set run.dir="$dir" "$@" >> "$dir.log" 2>&1
}
must_train() {
  train "$@" || { echo "FAIL: run $1 ($*) exited non-zero"; tail -n 20 "$1.log"; exit 1; }
}

must_train "$tmp/full"
must_train "$tmp/base" --set checkpoint.stop_after_steps=2
for fault in mid_shard_write@1 before_manifest_rename before_latest_update; do
  dir="$tmp/${fault%@*}"
  cp -r "$tmp/base" "$dir" && cp "$tmp/base.log" "$dir.log"
  if COCONUT_CKPT_FAULT=$fault train "$dir" --resume auto; then
    echo "FAIL: $fault: the run should have been killed"; tail -n 20 "$dir.log"; exit 1
  fi
  grep -q "COCONUT_CKPT_FAULT: killing rank .* at ${fault%@*}" "$dir.log" \
    || { echo "FAIL: $fault: the run failed, but not at the fault point"; tail -n 20 "$dir.log"; exit 1; }
  ck="$dir/checkpoints"
  [ "$(cat "$ck/latest")" = step-00000002 ] || { echo "FAIL: $fault: latest is '$(cat "$ck/latest")'"; exit 1; }
  [ -f "$ck/step-00000002/manifest.pb" ] || { echo "FAIL: $fault: the committed step 2 is gone"; exit 1; }
  if [ "$fault" = before_latest_update ]; then
    [ -f "$ck/step-00000003/manifest.pb" ] || { echo "FAIL: $fault: step 3 was committed, now it is gone"; exit 1; }
  else
    [ ! -e "$ck/step-00000003" ] || { echo "FAIL: $fault: an uncommitted step 3 is visible"; exit 1; }
  fi
  before=$(grep -c "resumed from" "$dir.log" || true)
  must_train "$dir" --resume auto
  grep "resumed from" "$dir.log" | tail -n 1 | grep -q "step-00000002" \
    || { echo "FAIL: $fault: did not resume from step 2"; grep "resumed from" "$dir.log"; exit 1; }
  [ "$(grep -c "resumed from" "$dir.log")" = $((before + 1)) ] || { echo "FAIL: $fault: no resume"; exit 1; }
done

# A run killed while it exported its model (as a SIGKILL there leaves it): a half-written
# RUN_DIR/model.tmp, and in RUN_DIR/model a stray temporary file and a damaged weights
# file. The rerun's export replaces both: model/ holds what the uninterrupted run's does.
dir="$tmp/export_killed"
cp -r "$tmp/base" "$dir" && cp "$tmp/base.log" "$dir.log"
mkdir -p "$dir/model.tmp" "$dir/model"
echo half >"$dir/model.tmp/model.safetensors"
echo half >"$dir/model/model.safetensors"
echo half >"$dir/model/config.json.tmp-99999"
must_train "$dir" --resume auto
[ ! -e "$dir/model.tmp" ] || { echo "FAIL: export_killed: model.tmp is left"; exit 1; }
[ "$(ls "$dir/model")" = "$(ls "$tmp/full/model")" ] ||
  { echo "FAIL: export_killed: model/ holds $(ls "$dir/model"), the full run's $(ls "$tmp/full/model")"; exit 1; }
for f in "$tmp"/full/model/*; do
  cmp -s "$f" "$dir/model/$(basename "$f")" || { echo "FAIL: export_killed: model/$(basename "$f") differs"; exit 1; }
done
echo "ok   export_killed: the rerun's export replaced the half-written model.tmp and model/"

python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
def losses(name, f, key):
    return [(r[key], r["loss"]) for r in (json.loads(l) for l in open(f"{tmp}/{name}/{f}"))]
ref_steps, ref_epochs = losses("full", "steps.jsonl", "step"), losses("full", "metrics.jsonl", "epoch")
ok = len(ref_steps) == 6 and len(ref_epochs) == 2
for name in ["mid_shard_write", "before_manifest_rename", "before_latest_update"]:
    good = losses(name, "steps.jsonl", "step") == ref_steps and losses(name, "metrics.jsonl", "epoch") == ref_epochs
    print(f"{'ok  ' if good else 'FAIL'} {name}: losses after the crash and resume equal the uninterrupted run's")
    ok &= good
sys.exit(0 if ok else 1)
PY
echo "checkpoint faults during training: all checks passed"
