#!/usr/bin/env bash
# The README demo's training run (configs/running_sum_tiny.yaml on 2 pipeline ranks under
# mpirun, as cluster/run_demo.sh runs it) learns its task: Coconut at stage 1, one step
# a continuous thought, ends at >= 90% validation accuracy (chance: 10%), while no_cot
# on the same data, the same steps and the same model stays below 30% -- so the figure
# comes from the chain of thought the curriculum starts from, not from an easy task.
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
