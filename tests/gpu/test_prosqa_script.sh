#!/usr/bin/env bash
# tests/gpu/prosqa.sh (the ProsQA experiment for a GPU machine) on the CPU, so that the
# script works when a GPU session runs it: a few dozen items, a 1-layer model,
# train.device=cpu through --set. Checks:
#  1. it exits 0 and table.md has a row per method whose accuracy is the run's own
#     eval_valid.json (on the 8 validation items asked for);
#  2. the --set overrides reached every run (the saved config has n_layer 1), Coconut
#     went past stage 0 while CoT stayed there, and no_curriculum ran;
#  3. a bad option is refused with exit code 2.
#   test_prosqa_script.sh REPO_DIR BUILD_DIR TEMP_DIR
set -euo pipefail
repo=$1 build=$2
mkdir -p "$3"
work=$(mktemp -d "$3/prosqa.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect
cd "$repo"
out=$work/out
bash tests/gpu/prosqa.sh "$build" 0.5 "$out" --items 48 --set train.device=cpu --set train.precision=fp32 \
  --set model.n_layer=1 --set model.d_model=32 --set model.n_head=2 --set train.epochs=2 --set eval.max_items=8 \
  >"$work/run.txt" 2>&1 || fail "prosqa.sh: $(tail -n 30 "$work/run.txt")"
python3 - "$out" <<'PY' || fail "table.md does not match the runs: $(cat "$out/table.md")"
import json, re, sys
out = sys.argv[1]
table = open(f"{out}/table.md").read()
for method in ("cot", "coconut", "no_curriculum"):
    e = json.load(open(f"{out}/{method}/eval_valid.json"))
    assert e["total"] == 8, e
    row = f"| {method} | {100 * e['accuracy']:.1f}% ({e['correct']}/8) | 2 |"
    assert row in table, (row, table)
PY
pass "table.md has every run's accuracy"
for method in cot coconut no_curriculum; do
  grep -q "\"n_layer\":1" "$out/$method/config.yaml" || fail "$method: the --set overrides did not reach the run"
done
python3 - "$out" <<'PY' || fail "the stages are wrong"
import json, sys
stage = lambda m: [json.loads(l) for l in open(f"{sys.argv[1]}/{m}/metrics.jsonl") if l.strip()][-1]["stage"]
assert stage("cot") == 0 and stage("coconut") >= 1, (stage("cot"), stage("coconut"))
PY
pass "overrides reached every run; coconut moved through its stages"
expect 2 "unknown option" bash tests/gpu/prosqa.sh "$build" 1 "$work/bad" --bogus
pass "a bad option is refused"
