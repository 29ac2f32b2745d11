#!/usr/bin/env bash
# tools/thought_probe.py on a quick chain's Coconut run (thoughts scaled by 0.5): the
# PyTorch replay decodes what the run's own evaluation decoded, item for item, and the
# probe table has a row per thought; a run whose slots are not fed-back thoughts is
# refused. Then --task running_sum on a short run of the demo's config. Needs torch and transformers (cluster/bootstrap.sh --python): skipped (77)
# without them.
#   test_thought_probe.sh COCONUT_BINARY REPO_DIR TEMP_DIR
set -euo pipefail

bin=$1 repo=$2
python3 -c "import torch, transformers" 2>/dev/null || { echo "skipped: torch or transformers cannot be imported"; exit 77; }
mkdir -p "$3"
work=$(mktemp -d "$3/probe.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect
out=$work/out
"$repo/tools/prontoqa_edge_chain.sh" --quick --out "$out" --bin "$bin" --methods coconut \
  --set model.thought_scale=0.5 >"$work/chain.txt" 2>&1 || fail "the quick chain: $(tail -n 30 "$work/chain.txt")"

probe=(python3 "$repo/tools/thought_probe.py")
"${probe[@]}" "$out/coconut" "$out/data/pqe_train.json" "$out/data/pqe_test.json" >"$work/probe.txt" 2>&1 ||
  fail "thought_probe.py: $(tail -n 20 "$work/probe.txt")"
items=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$out/data/pqe_test.json")
grep -q "6 thoughts; replayed answers equal to the run's evaluation: $items/$items;" "$work/probe.txt" ||
  fail "the replay and the run's evaluation differ: $(cat "$work/probe.txt")"
[[ $(grep -cE '^\| (after 6|[1-6]) \| step [1-6]: [0-9.]+% \([0-9.]+%\) \| [0-9.]+% \([0-9.]+%\) \|$' "$work/probe.txt") == 7 ]] ||
  fail "expected a probe row for thoughts 1-6 and after 6: $(cat "$work/probe.txt")"
pass "the replay decodes the run's $items answers; a probe row per thought"

expect 1 "is a cot run: only coconut and no_curriculum feed thoughts back" \
  "${probe[@]}" "$out/cot" "$out/data/pqe_train.json" "$out/data/pqe_test.json"
pass "a CoT run is refused"

# ---- --task running_sum: the partial sums as labels -------------------------------------
sums=(--set data.generate_train=256 --set data.generate_valid=40 --set curriculum.epochs_per_stage=1
      --set train.epochs=2 --set run.threads=1)
"$bin" train "$repo/configs/running_sum_tiny.yaml" "${sums[@]}" --set run.dir="$work/sum" >"$work/sum.txt" 2>&1 ||
  fail "the running-sum run: $(tail -n 20 "$work/sum.txt")"
# The run's items: the generator's seed 2024 (train) and 2025 (valid), as data.generate_seed says.
"$bin" data generate running_sum --count 256 --seed 2024 --out "$work/sum_train.json" >/dev/null
"$bin" data generate running_sum --count 40 --seed 2025 --out "$work/sum_valid.json" >/dev/null
"${probe[@]}" "$work/sum" "$work/sum_train.json" "$work/sum_valid.json" --task running_sum >"$work/probe.txt" 2>&1 ||
  fail "thought_probe.py --task running_sum: $(tail -n 20 "$work/probe.txt")"
grep -q "1 thoughts; replayed answers equal to the run's evaluation: 40/40;" "$work/probe.txt" ||
  fail "running sums: the replay and the run's evaluation differ: $(cat "$work/probe.txt")"
grep -q "| thought | partial sum after step k: probe (majority) |" "$work/probe.txt" &&
  [[ $(grep -cE '^\| (after 1|1) \| step 1: [0-9.]+% \([0-9.]+%\) \| [0-9.]+% \([0-9.]+%\) \|$' "$work/probe.txt") == 2 ]] ||
  fail "running sums: expected the partial-sum table with rows 1 and after 1: $(cat "$work/probe.txt")"
pass "--task running_sum: the replay decodes the run's answers; a probe row per thought"
