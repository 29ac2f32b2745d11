#!/usr/bin/env bash
# tools/reproduce.sh --quick end to end (issue #8's pipeline on a few dozen items):
#  1. it exits 0 and OUT/results.md has a number for all 5 methods on both datasets,
#     each equal to the run's own eval_valid.json, beside the paper's Table 1 value;
#  2. both plots (accuracy against c, the probe's frontier values) are PNG files;
#  3. a second invocation reuses the plan and trains nothing (every run is skipped);
#  4. --set reaches every run (model.n_head=2), and a rerun with other --set is refused.
#   test_reproduce_quick.sh COCONUT_BINARY REPO_DIR TEMP_DIR
set -euo pipefail

bin=$1 repo=$2
mkdir -p "$3"
work=$(mktemp -d "$3/reproduce.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect
out=$work/out
# --budget-minutes 6 instead of --quick's 2: the calibration runs beside other tests, and
# in one CI run (session 10) it measured about 3x the idle seconds per item, so that 2
# minutes left 15 items per epoch, under the planner's minimum of 16. At idle both
# budgets give the same plan (all 48 items: --quick's cap), and the runs take as long.
budget=(--budget-minutes 6)

"$repo/tools/reproduce.sh" --quick "${budget[@]}" --out "$out" --bin "$bin" --set model.n_head=2 >"$work/first.txt" 2>&1 ||
  fail "reproduce.sh --quick: $(tail -n 30 "$work/first.txt")"
! grep -q "no result" "$out/results.md" || fail "results.md has runs without a result: $(cat "$out/results.md")"
python3 - "$out" "$repo" "$repo/../shared/data/prosqa_valid.json" <<'PY' || fail "results.md does not match the runs"
import json, re, sys
out = sys.argv[1]
text = open(f"{out}/results.md").read()
paper = {"CoT": ("98.8", "77.5"), "No-CoT": ("93.8", "76.7"), "Coconut (c=1)": ("99.8", "97.0"),
         "pause as thought": ("100.0", "96.6"), "w/o curriculum": ("52.4", "76.1")}
dirs = {"CoT": "method-cot", "No-CoT": "method-no_cot", "pause as thought": "method-pause_as_thought",
        "w/o curriculum": "method-no_curriculum"}
for name, (p_pronto, p_prosqa) in paper.items():
    m = re.search(r"^\| " + re.escape(name) + r" \| ([0-9.]+) \((\d+)/(\d+)\) \| " + re.escape(p_pronto) +
                  r" \| ([0-9.]+) \((\d+)/(\d+)\) \| " + re.escape(p_prosqa) + r" \|$", text, re.M)
    assert m, f"no row for {name}:\n{text}"
    pronto = f"{out}/prontoqa/" + dirs.get(name, "method-coconut")
    prosqa = f"{out}/prosqa_c/c_thought-1" if name.startswith("Coconut") else f"{out}/prosqa_methods/{dirs[name]}"
    for run, correct, total in ((pronto, m.group(2), m.group(3)), (prosqa, m.group(5), m.group(6))):
        ev = json.load(open(f"{run}/eval_valid.json"))
        assert (ev["correct"], ev["total"]) == (int(correct), int(total)) == (ev["correct"], 8), (run, ev["correct"], correct)
# The answers table: one row per run; ProntoQA's True share recounted from eval_valid.json,
# ProsQA's shares ordered (a right answer names the subject and one of the two options);
# the CoT rules column only on CoT rows.
rows = re.findall(r"^\| (prosqa|prontoqa) \| (\w+) \| (\d) \| ([0-9.]+) \((\d+)/(\d+)\) \| ([0-9.-]+) \| "
                  r"([0-9.-]+) \| ([0-9.-]+) \| ([^|]+) \|$", text, re.M)
assert len(rows) == 12, rows
for ds, method, c, acc, correct, total, says_true, subject, options, rules in rows:
    assert (rules == "-") == (method != "cot"), (ds, method, rules)
    if method == "cot" and rules != "no rules":
        share, stated, written = re.fullmatch(r"([0-9.]+) \((\d+)/(\d+)\)", rules).groups()
        assert int(stated) <= int(written) and abs(float(share) - 100 * int(stated) / int(written)) < 0.05, rules
    run = (f"{out}/prontoqa/method-{method}" if ds == "prontoqa" else f"{out}/prosqa_c/c_thought-{c}"
           if method == "coconut" else f"{out}/prosqa_methods/method-{method}")
    items = json.load(open(f"{run}/eval_valid.json"))["items"]
    if ds == "prontoqa":
        assert abs(float(says_true) - 100 * sum(i["prediction"] == "True" for i in items) / len(items)) < 0.05, run
    else:
        assert float(acc) <= float(options) <= float(subject) <= 100, (run, acc, options, subject)
# The rules counter finds every rule of the reference chains in their questions.
sys.path.insert(0, sys.argv[2] + "/tools")
from reproduce_table import rules_stated
for data in (f"{out}/data/prontoqa_test.json", sys.argv[3]):
    for item in json.load(open(data)):
        stated, written = rules_stated(item["question"], "\n".join(item["steps"]))
        assert written > 0 and stated == written, (data, item["question"], item["steps"])
plan = json.load(open(f"{out}/plan.json"))
assert plan["epochs"] == 7 and all(d["train_items"] >= 16 for d in plan["datasets"].values()), plan
PY
pass "results.md: both datasets, all five methods, equal to each run's eval_valid.json"

for png in accuracy_vs_c.png probe_frontier.png; do
  [[ $(head -c 8 "$out/$png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] || fail "$png is not a PNG"
done
pass "plots"

"$repo/tools/reproduce.sh" --quick "${budget[@]}" --out "$out" --bin "$bin" --set model.n_head=2 >"$work/second.txt" 2>&1 ||
  fail "second reproduce.sh --quick: $(tail -n 30 "$work/second.txt")"
[[ $(cat "$out"/prosqa_c.log "$out"/prosqa_methods.log "$out"/prontoqa.log | grep -c "skipped, already finished") == 12 ]] ||
  fail "the second invocation trained again: $(grep -h '\] ' "$out"/*.log | tail -n 15)"
pass "a second invocation skips all 12 runs"

# --set: in every run's effective configuration and in the page's command line; a rerun
# with other overrides stops before anything runs.
configs=("$out"/prosqa_c/*/config.yaml "$out"/prosqa_methods/*/config.yaml "$out"/prontoqa/*/config.yaml)
[[ ${#configs[@]} == 12 ]] || fail "expected 12 run configs, found ${#configs[@]}"
for f in "${configs[@]}"; do grep -q '"n_head":2' "$f" || fail "$f: no model.n_head 2: $(tail -n 1 "$f")"; done
grep -q -- "--set model.n_head=2\`" "$out/results.md" || fail "results.md does not name the override: $(head -n 3 "$out/results.md")"
before=$(find "$out" -newer "$out/results.md" | wc -l)
expect 2 "was started with --set overrides \[model.n_head=2\] and this invocation gives \[\]" \
  "$repo/tools/reproduce.sh" --quick --out "$out" --bin "$bin"
[[ $(find "$out" -newer "$out/results.md" | wc -l) == "$before" ]] || fail "the refused invocation wrote into $out"
expect 2 "--set wants KEY=VALUE, got 'n_head'" "$repo/tools/reproduce.sh" --quick --out "$work/other" --bin "$bin" --set n_head
[[ ! -e $work/other ]] || fail "a bad --set created $work/other"
pass "--set reaches every run; other overrides on a rerun, or a malformed one, are refused (exit 2)"
