#!/usr/bin/env bash
# End-to-end checks of `coconut data` through the real binary: outputs, determinism, exit
# codes (2 = usage error, 1 = bad data naming the file) and that failures leave no files.
#   test_data_cli.sh COCONUT_BINARY TEMP_DIR [SHARED_DATA_DIR]
set -euo pipefail

bin=$1
mkdir -p "$2"
work=$(mktemp -d "$2/data_cli.XXXXXX")
trap 'rm -rf "$work"' EXIT
shared=${3:-}

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

# no_output PATH...: neither PATH nor PATH.tmp exists.
no_output() {
  for p in "$@"; do
    [[ ! -e $p && ! -e $p.tmp ]] || fail "a failed command left $p or $p.tmp behind"
  done
}

# count_items FILE.json: the number of items of a dataset, from `data stats`.
count_items() { "$bin" data stats "$1" | head -n 1 | sed -E 's/.*: ([0-9]+) items$/\1/'; }

# ---- generate + stats ------------------------------------------------------------------
"$bin" data generate prosqa --count 200 --seed 7 --out "$work/a.json" >"$work/out.txt"
grep -q "wrote 200 ProsQA items" "$work/out.txt" || fail "generate summary: $(cat "$work/out.txt")"
no_output "$work/a.json.tmp"
"$bin" data stats "$work/a.json" >"$work/stats.txt" || fail "stats of generated ProsQA: $(cat "$work/stats.txt")"
grep -q "a.json: 200 items" "$work/stats.txt" || fail "stats item count: $(cat "$work/stats.txt")"
for row in "steps per item" "nodes per graph" "edges per graph" "shortest path \\(steps\\)"; do
  grep -Eq "$row +mean +[0-9]+\.[0-9]{3}" "$work/stats.txt" || fail "stats lacks the mean of '$row'"
done
grep -q "invariants: all hold" "$work/stats.txt" || fail "generated ProsQA breaks invariants"
pass "generate prosqa + stats"

"$bin" data generate prosqa --count 200 --seed 7 --out "$work/b.json" >/dev/null
cmp -s "$work/a.json" "$work/b.json" || fail "same seed gave different files"
"$bin" data generate prosqa --count 200 --seed 8 --out "$work/c.json" >/dev/null
! cmp -s "$work/a.json" "$work/c.json" || fail "different seeds gave the same file"
pass "generate is deterministic"

"$bin" data generate prontoqa --count 50 --seed 1 --hops 3 --out "$work/p.json" >/dev/null
"$bin" data stats "$work/p.json" >"$work/stats.txt"
grep -q "p.json: 50 items" "$work/stats.txt" || fail "prontoqa stats: $(cat "$work/stats.txt")"
# 3 hops: 4 steps on every item.
grep -Eq "steps per item +mean +4\.000 +min +4 +max +4" "$work/stats.txt" || fail "prontoqa steps: $(cat "$work/stats.txt")"
grep -Eq "answer length \(words\) +mean +1\.000" "$work/stats.txt" || fail "prontoqa answers are not one word"
pass "generate prontoqa + plain stats"

"$bin" data generate running_sum --count 40 --seed 3 --digits 4 --out "$work/r.json" >"$work/out.txt"
grep -q "wrote 40 running-sum items (seed 3, 4 digits)" "$work/out.txt" || fail "running_sum summary: $(cat "$work/out.txt")"
"$bin" data stats "$work/r.json" >"$work/stats.txt"
# 4 digits: 3 partial sums on every item, a one-digit answer.
grep -Eq "steps per item +mean +3\.000 +min +3 +max +3" "$work/stats.txt" || fail "running_sum steps: $(cat "$work/stats.txt")"
expect 2 "option --digits expects an integer in \[2, 64\]" "$bin" data generate running_sum --count 4 --seed 1 --digits 1 --out "$work/bad.json"
expect 2 "unknown option or argument .--hops." "$bin" data generate running_sum --count 4 --seed 1 --hops 3 --out "$work/bad.json"
no_output "$work/bad.json"
pass "generate running_sum + plain stats"

# ---- stats catches a broken invariant ---------------------------------------------------
# Swap target and neg_target of the first item: the answer then names a wrong node.
python3 - "$work/a.json" "$work/broken.json" <<'EOF'
import json, sys
items = json.load(open(sys.argv[1]))
items[0]["target"], items[0]["neg_target"] = items[0]["neg_target"], items[0]["target"]
json.dump(items, open(sys.argv[2], "w"))
EOF
rc=0
"$bin" data stats "$work/broken.json" >"$work/stats.txt" 2>"$work/err.txt" || rc=$?
[[ $rc == 1 ]] || fail "stats of a broken file exited $rc, expected 1"
grep -q "item 0:" "$work/stats.txt" || fail "stats did not list the violation of item 0: $(cat "$work/stats.txt")"
grep -q "broken.json" "$work/err.txt" || fail "stats error does not name the file"
pass "stats exits 1 on a broken invariant"

# ---- convert-gsm8k ---------------------------------------------------------------------
if [[ -n $shared && -f $shared/gsm8k_valid.txt ]]; then
  "$bin" data convert-gsm8k "$shared/gsm8k_valid.txt" --out "$work/gsm.json" >"$work/out.txt"
  grep -q "converted 500 items" "$work/out.txt" || fail "convert summary: $(cat "$work/out.txt")"
  [[ $(count_items "$work/gsm.json") == 500 ]] || fail "converted GSM8k does not have 500 items"
  pass "convert-gsm8k"
else
  echo "skip: convert-gsm8k on the shared data (no gsm8k_valid.txt in '${shared}')"
fi
printf 'What is 2+3?||<<2+3=5>> #### 5\nA line without the separator\n' >"$work/bad.txt"
expect 1 "bad.txt: line 2" "$bin" data convert-gsm8k "$work/bad.txt" --out "$work/bad.json"
no_output "$work/bad.json"
pass "convert-gsm8k rejects a malformed line"

# ---- split -----------------------------------------------------------------------------
"$bin" data split "$work/a.json" --out-train "$work/tr.json" --out-test "$work/te.json" --test-count 30 --seed 3 >/dev/null
[[ $(count_items "$work/tr.json") == 170 ]] || fail "split train count"
[[ $(count_items "$work/te.json") == 30 ]] || fail "split test count"
python3 - "$work/a.json" "$work/tr.json" "$work/te.json" <<'EOF'
import json, sys
a, tr, te = (json.load(open(p)) for p in sys.argv[1:])
qs = [x["question"] for x in a]
pos = lambda part: [qs.index(x["question"]) for x in part]
assert sorted(pos(tr) + pos(te)) == list(range(len(a))), "split lost or duplicated items"
assert pos(tr) == sorted(pos(tr)) and pos(te) == sorted(pos(te)), "split does not keep file order"
EOF
"$bin" data split "$work/a.json" --out-train "$work/tr2.json" --out-test "$work/te2.json" --test-count 30 --seed 3 >/dev/null
cmp -s "$work/te.json" "$work/te2.json" || fail "split with the same seed differs"
expect 1 "a.json: has 200 items" "$bin" data split "$work/a.json" --out-train "$work/x.json" --out-test "$work/y.json" --test-count 201 --seed 1
no_output "$work/x.json" "$work/y.json"
pass "split"

# ---- tokenizer -------------------------------------------------------------------------
"$bin" data tokenizer "$work/a.json" "$work/p.json" --out "$work/tok.txt" >"$work/out.txt"
grep -Eq "vocabulary size [0-9]+ \(from 250 items in 2 files\)" "$work/out.txt" || fail "tokenizer summary: $(cat "$work/out.txt")"
head -n 1 "$work/tok.txt" | grep -q "coconut-word-tokenizer v1" || fail "tokenizer file header"
size=$(sed -n 2p "$work/tok.txt" | cut -d' ' -f2)
grep -q "vocabulary size $size " "$work/out.txt" || fail "printed size differs from the file's size $size"
grep -qx '[0-9]* \\n' "$work/tok.txt" || fail "tokenizer lacks the newline token"
grep -qx '[0-9]* #' "$work/tok.txt" || fail "tokenizer lacks the # token"
grep -qx '[0-9]* <|latent|>' "$work/tok.txt" || fail "tokenizer lacks <|latent|>"
pass "tokenizer"

# ---- bad input -------------------------------------------------------------------------
expect 2 "unknown subcommand 'frobnicate'" "$bin" data frobnicate
expect 2 "missing --out" "$bin" data generate prosqa --count 5 --seed 1
expect 2 "option --count expects an integer" "$bin" data generate prosqa --count ten --seed 1 --out "$work/n.json"
expect 2 "option --seed expects" "$bin" data generate prosqa --count 5 --seed -1 --out "$work/n.json"
expect 2 "unknown dataset 'gsm8k'" "$bin" data generate gsm8k --count 5 --seed 1 --out "$work/n.json"
expect 2 "unknown option or argument '--hops'" "$bin" data generate prosqa --count 5 --seed 1 --hops 2 --out "$work/n.json"
expect 2 "missing --test-count" "$bin" data split "$work/a.json" --out-train "$work/n.json" --out-test "$work/m.json" --seed 1
expect 2 "unknown option '--bogus'" "$bin" data stats "$work/a.json" --bogus
no_output "$work/n.json" "$work/m.json"
expect 1 "missing.json: cannot open" "$bin" data stats "$work/missing.json"
expect 1 "missing.txt: cannot open" "$bin" data convert-gsm8k "$work/missing.txt" --out "$work/n.json"
expect 1 "missing.json: cannot open" "$bin" data tokenizer "$work/a.json" "$work/missing.json" --out "$work/t.txt"
no_output "$work/n.json" "$work/t.txt"
echo '[{"question": "q", "steps": [], "answer": ' >"$work/malformed.json"
expect 1 "malformed.json: not valid JSON" "$bin" data stats "$work/malformed.json"
expect 1 "malformed.json" "$bin" data split "$work/malformed.json" --out-train "$work/n.json" --out-test "$work/m.json" --test-count 0 --seed 1
no_output "$work/n.json" "$work/m.json"
expect 1 "nodir/out.json.tmp: cannot open" "$bin" data generate prosqa --count 2 --seed 1 --out "$work/nodir/out.json"
"$bin" data --help | grep -q "usage: coconut data" || fail "data --help"
"$bin" data split --help | grep -q "test-count" || fail "data split --help"
pass "bad input exits 2 (usage) or 1 (data, naming the file) and leaves no output"

echo "all coconut data checks passed"
