#!/usr/bin/env bash
# train.lr_schedule / train.warmup_steps / train.min_lr in `coconut train`: every step's
# rate in RUN_DIR/steps.jsonl must be the schedule's formula, computed here from the
# step counts alone (cosine over the planned steps, a warmup restarted at each stage's
# optimizer reset); pp=2 x dp=2 under mpirun takes the same rates and losses within 1e-5
# of one process; a run stopped mid-stage and resumed gives the uninterrupted run's
# rates and losses bit for bit; a schedule that changes the rate changes the losses.
# Three stages of one epoch, 3 steps each (48 items, batch 16).
# usage: test_train_lr_schedule.sh COCONUT_BINARY CONFIG_DIR TMP_DIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bin=$1 configs=$2 tmp=$3/train_lr_schedule
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
args=("$configs/prosqa_tiny.yaml" --set train.epochs=3 --set curriculum.epochs_per_stage=1
      --set data.generate_train=48 --set data.generate_valid=4 --set train.batch_size=16
      --set train.micro_batch_size=4 --set eval.every_epochs=0 --set run.threads=1 --set train.lr=0.001)
schedule=(--set train.lr_schedule=cosine --set train.warmup_steps=2 --set train.min_lr=0.0001)

train_run constant 1
train_run cosine 1 "${schedule[@]}"
train_run cosine_pp2_dp2 4 "${schedule[@]}" --set parallel.pp=2 --set parallel.dp=2
train_run cosine_resumed 1 "${schedule[@]}" --set checkpoint.stop_after_steps=4
train_run cosine_resumed 1 "${schedule[@]}" --resume auto

python3 - "$tmp" <<'PY'
import json, math, sys
tmp = sys.argv[1]
def steps(name):
    return [json.loads(l) for l in open(f"{tmp}/{name}/steps.jsonl")]
lr, floor, warmup, total = 1e-3, 1e-4, 2, 9  # 3 epochs x 48 / 16
def expected(rows):
    out, since, stage = [], 0, None
    for i, r in enumerate(rows):
        if r["stage"] != stage:  # train.reset_optimizer: stage (the default)
            since, stage = 0, r["stage"]
        rate = floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * min(i, total) / total))
        out.append(rate * min(1.0, (since + 1) / warmup))
        since += 1
    return out
ok = True
cosine = steps("cosine")
want = expected(cosine)
got = [r["lr"] for r in cosine]
print("cosine rates:", " ".join(f"{x:.3e}" for x in got))
ok &= len(got) == total and all(abs(a - b) <= 1e-6 * b for a, b in zip(got, want))
constant = steps("constant")
print("constant rates:", sorted({r["lr"] for r in constant}))
ok &= len(constant) == total and all(abs(r["lr"] - lr) <= 1e-9 for r in constant)
ok &= [r["loss"] for r in constant][2:] != [r["loss"] for r in cosine][2:]
grid = steps("cosine_pp2_dp2")
worst = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(grid, cosine))
print(f"pp2 x dp2: same rates {[r['lr'] for r in grid] == got}, worst relative loss difference {worst:.2e}")
ok &= len(grid) == total and [r["lr"] for r in grid] == got and worst <= 1e-5
resumed = steps("cosine_resumed")
same = [(r["loss"], r["lr"]) for r in resumed] == [(r["loss"], r["lr"]) for r in cosine]
print("stopped after step 4 and resumed = uninterrupted:", same)
ok &= same
sys.exit(0 if ok else 1)
PY
# A floor above the rate is refused before anything is written.
if "$bin" train "${args[@]}" --set run.dir="$tmp/bad" --set train.min_lr=0.01 > "$tmp/bad.log" 2>&1; then
  echo "FAIL: train.min_lr above train.lr should be refused"; exit 1
fi
grep -q "train.min_lr 0.01 is above train.lr 0.001" "$tmp/bad.log" || { echo "FAIL: no message"; cat "$tmp/bad.log"; exit 1; }
[ ! -e "$tmp/bad" ] || { echo "FAIL: the refused run wrote $tmp/bad"; exit 1; }
echo "learning-rate schedule: all checks passed"
