#!/usr/bin/env bash
# GSM8k through the real GPT-2 tokenizer, end to end: `coconut data convert-gsm8k` on the
# validation split (../shared/data/gsm8k_valid.txt), then `coconut train` of a tiny
# Coconut model (c = 2, stages 0-3) on its first 48 items with data.tokenizer: bpe and the
# GPT-2 files in COCONUT_GPT2_DIR (cluster/run_tests.sh fetches them with
# tools/fetch_gpt2_vocab.sh), and its evaluation. Checks: the vocabulary is GPT-2's plus
# the three Coconut tokens (50,260); the first step's loss is ln(50,260) within 0.05 (a
# freshly initialised model predicts nearly uniformly); the evaluation's references are
# the converted answers; at stage 3 every item with 3 or more steps used 6 thoughts.
# Exit 77 (CTest: skipped) without the GPT-2 files or the shared data.
#   test_gsm8k_gpt2_vocab.sh COCONUT_BINARY CONFIG_DIR SHARED_DATA_DIR TEMP_DIR
set -euo pipefail
bin=$1 configs=$2 data=$3
mkdir -p "$4"
work=$(mktemp -d "$4/gsm8k_gpt2.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

gpt2=${COCONUT_GPT2_DIR:-}
if [[ -z $gpt2 || ! -f $gpt2/merges.txt || ! -f $data/gsm8k_valid.txt ]]; then
  echo "skipped: needs COCONUT_GPT2_DIR (tools/fetch_gpt2_vocab.sh) and $data/gsm8k_valid.txt"
  exit 77
fi
"$bin" data convert-gsm8k "$data/gsm8k_valid.txt" --out "$work/all.json" >/dev/null || fail "convert-gsm8k"
python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))[:48], open(sys.argv[2], 'w'))" \
  "$work/all.json" "$work/items.json"
"$bin" train "$configs/prosqa_tiny.yaml" --set run.dir="$work/run" --set data.kind=file \
  --set data.train_file="$work/items.json" --set data.valid_file="$work/items.json" --set data.tokenizer=bpe \
  --set data.bpe_dir="$gpt2" --set model.n_layer=1 --set model.d_model=32 --set model.n_head=2 \
  --set curriculum.c_thought=2 --set curriculum.epochs_per_stage=1 --set train.epochs=4 --set train.batch_size=8 \
  --set eval.every_epochs=0 --set eval.max_items=16 --set eval.max_new_tokens=16 --set run.threads=2 \
  >"$work/train.log" 2>&1 || fail "train: $(tail -n 20 "$work/train.log")"
grep -q "vocab 50260," "$work/run/logs/train.rank0.log" || fail "the model's vocabulary is not GPT-2's 50,257 + 3"
python3 - "$work/run" "$work/items.json" <<'PY' || fail "GSM8k run (see above)"
import json, math, sys
run, items = sys.argv[1], json.load(open(sys.argv[2]))
first = json.loads(open(f"{run}/steps.jsonl").readline())["loss"]
print(f"first step loss {first:.4f}, ln(50260) = {math.log(50260):.4f}")
assert abs(first - math.log(50260)) < 0.05, "the first loss is not that of a near-uniform prediction over 50,260 ids"
ev = json.load(open(f"{run}/eval_valid.json"))
assert len(ev["items"]) == 16, len(ev["items"])
for k, it in enumerate(ev["items"]):
    assert it["reference"] == items[k]["answer"], (k, it["reference"], items[k]["answer"])
    if len(items[k]["steps"]) >= 3:
        assert it["thoughts"] == 6, (k, it["thoughts"])
print("references and thoughts as expected for 16 items")
PY
pass "GSM8k with the GPT-2 vocabulary: convert, train (c = 2, stages 0-3), evaluate"
