#!/usr/bin/env bash
# train.pad_columns (batches rounded to multiples of N columns, so that their pass plans
# repeat for CUDA graphs) on the CPU: 2 epochs of the tiny ProsQA Coconut run, through
# stage 1 (thoughts fed back), with pad_columns 0 and 32. Every step's loss must agree
# within 1e-5 relative (the padding is masked; only summation order differs), and the
# run must go through the stage that feeds thoughts back.
#   test_train_pad_columns.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$2
mkdir -p "$3"
work=$(mktemp -d "$3/pad_columns.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

for pad in 0 32; do
  "$bin" train "$configs/prosqa_tiny.yaml" --set run.dir="$work/pad$pad" --set train.pad_columns=$pad \
    --set data.generate_train=64 --set data.generate_valid=4 --set train.epochs=2 --set train.batch_size=8 \
    --set curriculum.epochs_per_stage=1 \
    >"$work/pad$pad.log" 2>&1 || fail "pad_columns $pad: $(tail -n 20 "$work/pad$pad.log")"
done
python3 - "$work" <<'PY' || fail "the padded run's losses differ"
import json, sys
rows = lambda pad: [json.loads(l) for l in open(f"{sys.argv[1]}/pad{pad}/steps.jsonl") if l.strip()]
a, b = rows(0), rows(32)
assert len(a) == len(b) == 16, (len(a), len(b))
assert any(r["stage"] >= 1 for r in a), "the run never fed thoughts back"
worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b))
assert worst <= 1e-5, worst
print(f"16 steps, largest relative loss difference {worst:.2e}")
PY
pass "pad_columns 32 gives pad_columns 0's losses"
