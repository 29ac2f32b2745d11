#!/usr/bin/env bash
# Resume on another topology (issue #5): a checkpoint saved by pp=2 x dp=2 (mpirun -np 4)
# after step 4 of 9 is resumed by (pp, dp) = (1, 1), (1, 4) and (4, 1):
#   - resumed with checkpoint.stop_after_steps=4, the run saves again at once, on its own
#     topology: every tensor (weights, AdamW moments) equals the saved one bit for bit
#     (ckpt_compare reads both through the resharding reader);
#   - resumed to the end, the per-step losses after the resume and the per-epoch means
#     are within 1e-5 relative of the uninterrupted pp=2 x dp=2 run.
# The model has 4 layers so that 4 pipeline stages fit.
# usage: test_train_resume_topology.sh COCONUT_BINARY CKPT_COMPARE_BINARY CONFIG_DIR TMP_DIR
set -euo pipefail
bin=$1 compare=$2 configs=$3 tmp=$4/train_resume_topology
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
args=("$configs/prosqa_tiny.yaml" --set train.epochs=3 --set curriculum.epochs_per_stage=1 --set model.n_layer=4
      --set data.generate_train=48 --set data.generate_valid=4 --set train.batch_size=16
      --set train.micro_batch_size=4 --set model.dropout=0.1 --set eval.every_epochs=0 --set run.threads=1)

run() {  # run NAME PP DP [options...]
  local name=$1 pp=$2 dp=$3; shift 3
  local np=$((pp * dp))
  mpirun --oversubscribe -np "$np" "$bin" train "${args[@]}" --set run.dir="$tmp/$name" --set parallel.pp="$pp" \
    --set parallel.dp="$dp" "$@" > "$tmp/$name.log" 2>&1 \
    || { echo "FAIL: run $name ($*) exited non-zero"; tail -n 20 "$tmp/$name.log"; exit 1; }
}

run full_2x2 2 2
run saved_2x2 2 2 --set checkpoint.stop_after_steps=4
saved="$tmp/saved_2x2/checkpoints/step-00000004"
[ -f "$saved/manifest.pb" ] || { echo "FAIL: no committed checkpoint $saved"; ls -R "$tmp/saved_2x2"; exit 1; }
for topo in "1 1" "1 4" "4 1"; do
  set -- $topo
  name="${1}x${2}"
  run "resave_$name" "$1" "$2" --resume "$saved" --set checkpoint.stop_after_steps=4
  "$compare" "$saved" "$tmp/resave_$name/checkpoints/step-00000004" params adam.m adam.v \
    || { echo "FAIL: state resaved on $name differs from the one saved on 2x2"; exit 1; }
  run "cont_$name" "$1" "$2" --resume "$saved"
done

python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
def rows(name, f):
    return [json.loads(l) for l in open(f"{tmp}/{name}/{f}")]
ref_steps = {r["step"]: r["loss"] for r in rows("full_2x2", "steps.jsonl")}
ref_epochs = {r["epoch"]: r["loss"] for r in rows("full_2x2", "metrics.jsonl")}
ok = len(ref_steps) == 9 and len(ref_epochs) == 3
for name in ["cont_1x1", "cont_1x4", "cont_4x1"]:
    steps = {r["step"]: r["loss"] for r in rows(name, "steps.jsonl")}  # steps 5..9: the run dir is new
    epochs = {r["epoch"]: r["loss"] for r in rows(name, "metrics.jsonl")}  # epochs 1, 2
    worst = max(abs(steps[s] - ref_steps[s]) / abs(ref_steps[s]) for s in steps)
    worst_epoch = max(abs(epochs[e] - ref_epochs[e]) / abs(ref_epochs[e]) for e in epochs)
    good = sorted(steps) == [5, 6, 7, 8, 9] and sorted(epochs) == [1, 2] and worst <= 1e-5 and worst_epoch <= 1e-5
    print(f"{'ok  ' if good else 'FAIL'} {name}: steps {sorted(steps)}, worst relative difference per step "
          f"{worst:.2e}, per epoch {worst_epoch:.2e}")
    ok &= good
sys.exit(0 if ok else 1)
PY
echo "resume on other topologies: all checks passed"
