#!/usr/bin/env bash
# The README demo's training run (configs/running_sum_tiny.yaml on 2 pipeline ranks under
# mpirun, as cluster/run_demo.sh runs it) learns its task: Coconut at stage 1, one step
# a continuous thought, ends at >= 90% validation accuracy (chance: 10%), while no_cot
# on the same data, the same steps and the same model stays below 30% -- so the figure
# comes from the chain of thought the curriculum starts from, not from an easy task.
# Then tools/running_sum_swap.py on the run's `coconut eval --thought-source` reports.
#   test_demo_learns.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$2
mkdir -p "$3"
tmp=$(mktemp -d "$3/demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, train_run

args=("$configs/running_sum_tiny.yaml" --set parallel.pp=2 --set train.micro_batch_size=8)
train_run coconut 2
train_run no_cot 2 --set curriculum.method=no_cot

# last_epoch RUN: "stage valid_accuracy" of the run's last metrics.jsonl line.
last_epoch() {
  python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; print(r['stage'], r['valid_accuracy'])" \
    "$tmp/$1/metrics.jsonl"
}
read -r stage accuracy < <(last_epoch coconut)
read -r _ control < <(last_epoch no_cot)
echo "coconut: stage $stage, valid accuracy $accuracy; no_cot: $control"
[[ $stage == 1 ]] || fail "the demo run ended at stage $stage, expected 1"
python3 -c "import sys; sys.exit(not float(sys.argv[1]) >= 0.9)" "$accuracy" ||
  fail "the demo run ended at $accuracy valid accuracy (expected >= 0.9): $(tail -n 12 "$tmp/coconut.log")"
python3 -c "import sys; sys.exit(not float(sys.argv[1]) < 0.3)" "$control" ||
  fail "no_cot reached $control: the task is easier than the test assumes"
# The closing table (README) says the same, to 3 decimals.
grep -Eq "\| coconut \| 1 \| 1 \| [0-9.]+ \| $(printf %.3f "$accuracy") \|" "$tmp/coconut.log" ||
  fail "the run's closing table lacks its accuracy: $(tail -n 4 "$tmp/coconut.log")"
pass "the demo run learns (coconut $accuracy, no_cot $control)"

# The swap analysis reads the reports: a row per source with the report's accuracy, and
# a model this accurate writes its own partial sum first for most items.
"$bin" data generate running_sum --count 64 --seed 77 --out "$tmp/items.json" >/dev/null
for source in own other; do
  "$bin" eval "$tmp/coconut" --data "$tmp/items.json" --thought-source $source --out "$tmp/$source.json" >/dev/null
done
python3 "$configs/../tools/running_sum_swap.py" "$tmp/items.json" 1 "$tmp/own.json" "$tmp/other.json" >"$tmp/swap.md" ||
  fail "running_sum_swap.py: $(cat "$tmp/swap.md")"
cat "$tmp/swap.md"
python3 - "$tmp/swap.md" "$tmp/own.json" <<'PY' || fail "running_sum_swap.py's table: $(cat "$tmp/swap.md")"
import json, re, sys
rows = re.findall(r"^\| \S+ \| (\w+) \| ([0-9.]+)% \| (\d+)/64 \| (\d+)/64 \|$", open(sys.argv[1]).read(), re.M)
assert [r[0] for r in rows] == ["own", "other"], rows
correct = sum(it["correct"] for it in json.load(open(sys.argv[2]))["items"])
assert float(rows[0][1]) == round(100 * correct / 64, 1) and int(rows[0][2]) >= 48, (rows[0], correct)
PY
pass "running_sum_swap.py reads the eval reports"
