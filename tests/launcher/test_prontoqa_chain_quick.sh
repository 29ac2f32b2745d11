#!/usr/bin/env bash
# tools/prontoqa_edge_chain.sh --quick end to end (issue #8's pre-training chain on a few
# dozen items):
#  1. it exits 0 and OUT/summary.md has one row per run, each equal to the run's own
#     eval_valid.json and final loss;
#  2. each run starts from the one before (model.init_from) and keeps the first run's
#     shape; the methods carry their curriculum settings, the --suffix and the --set;
#  3. a second invocation trains nothing and leaves summary.md as it was;
#  4. bad options exit 2 before anything is written.
#   test_prontoqa_chain_quick.sh COCONUT_BINARY REPO_DIR TEMP_DIR
set -euo pipefail

bin=$1 repo=$2
mkdir -p "$3"
work=$(mktemp -d "$3/chain.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect
out=$work/out
chain=("$repo/tools/prontoqa_edge_chain.sh" --quick --out "$out" --bin "$bin" --methods "coconut no_cot"
       --suffix _s --set model.thought_scale=0.5)

"${chain[@]}" >"$work/first.txt" 2>&1 || fail "prontoqa_edge_chain.sh --quick: $(tail -n 30 "$work/first.txt")"
python3 - "$out" <<'PY' || fail "summary.md or the runs are not what the chain should make: $(cat "$out/summary.md")"
import json, re, sys
out = sys.argv[1]
rows = re.findall(r"^\| (\w+) \| ([0-9.]+)% \((\d+)/(\d+)\) \| ([0-9.]+) \| (\d+) \|$", open(f"{out}/summary.md").read(), re.M)
order = ["copy1", "copy2", "lookup4", "lookup40a", "lookup40b", "cot", "coconut_s", "no_cot_s"]
assert [r[0] for r in rows] == order, rows
start = {"copy2": "copy1", "lookup4": "copy2", "lookup40a": "lookup4", "lookup40b": "lookup40a", "cot": "lookup40b",
         "coconut_s": "cot", "no_cot_s": "cot"}
for name, pct, correct, total, loss, _ in rows:
    ev = json.load(open(f"{out}/{name}/eval_valid.json"))
    assert (ev["correct"], ev["total"]) == (int(correct), int(total)), name
    assert abs(float(pct) - 100 * ev["correct"] / ev["total"]) < 0.05, name
    last = [r for r in map(json.loads, open(f"{out}/{name}/metrics.jsonl")) if "loss" in r][-1]["loss"]
    assert abs(float(loss) - last) < 5e-5, (name, loss, last)
    shape = json.load(open(f"{out}/{name}/model/config.json"))
    assert (shape["n_layer"], shape["n_embd"], shape["n_head"]) == (1, 32, 2), (name, shape)
    config = json.loads(open(f"{out}/{name}/config.yaml").read().split("\n", 1)[1])
    assert config["run"]["threads"] == 1, name
    if name in start:
        assert config["model"]["init_from"] == f"{out}/{start[name]}/model", (name, config["model"])
    method = {"coconut_s": "coconut", "no_cot_s": "no_cot"}.get(name, "cot")
    assert config["curriculum"]["method"] == method, (name, config["curriculum"])
    if name.endswith("_s"):
        assert config["train"]["epochs"] == 7 and config["curriculum"]["epochs_per_stage"] == 1, name
        assert config["model"]["thought_scale"] == 0.5, name
    else:
        assert "thought_scale" not in config["model"], name
PY
pass "8 runs, each from the one before, equal to summary.md; the methods with their settings"

cp "$out/summary.md" "$work/summary_before.md"
"${chain[@]}" >"$work/second.txt" 2>&1 || fail "second run: $(tail -n 30 "$work/second.txt")"
[[ $(grep -c ": done before" "$work/second.txt") == 8 ]] || fail "the second invocation trained again: $(cat "$work/second.txt")"
cmp -s "$out/summary.md" "$work/summary_before.md" || fail "the second invocation changed summary.md"
pass "a second invocation skips all 8 runs"

expect 2 "\-\-layers must be a positive integer, got '0'" "$repo/tools/prontoqa_edge_chain.sh" --out "$work/bad" --bin "$bin" --layers 0
expect 2 "\-\-epochs-per-stage must be a positive integer" "$repo/tools/prontoqa_edge_chain.sh" --out "$work/bad" --bin "$bin" --epochs-per-stage x
expect 2 "no coconut binary at $work/none" "$repo/tools/prontoqa_edge_chain.sh" --out "$work/bad" --bin "$work/none"
expect 2 "tools/prontoqa_edge_chain.sh \[--out" "$repo/tools/prontoqa_edge_chain.sh" --out "$work/bad" --bin "$bin" --frobnicate
[[ ! -e $work/bad ]] || fail "a refused invocation created $work/bad"
pass "bad options exit 2 and write nothing"
