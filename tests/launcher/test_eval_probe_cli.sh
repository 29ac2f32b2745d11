#!/usr/bin/env bash
# End-to-end checks of `coconut eval` and `coconut probe` through the real binary, on a
# one-epoch tiny run trained here: reports, defaults taken from the run, exit codes
# (2 = usage error, 1 = bad input naming what is wrong).
#   test_eval_probe_cli.sh COCONUT_BINARY TEMP_DIR
set -euo pipefail

bin=$1
mkdir -p "$2"
work=$(mktemp -d "$2/eval_probe_cli.XXXXXX")
trap 'rm -rf "$work"' EXIT

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

# ---- a tiny run: the file schedules 4 epochs (stage 1 last), --set trains only 1 ------
cat >"$work/tiny.yaml" <<'EOF'
run:
  dir: runs/unused
  seed: 1
  threads: 1
model:
  n_layer: 1
  n_head: 2
  d_model: 32
  max_positions: 512
data:
  kind: prosqa
  generate_train: 64
  generate_valid: 16
  tokenizer: word
curriculum:
  method: coconut
  c_thought: 1
  max_latent_stage: 3
  epochs_per_stage: 2
train:
  epochs: 4
  batch_size: 16
  lr: 1.0e-3
eval:
  max_new_tokens: 24
EOF
run=$work/run
"$bin" train "$work/tiny.yaml" --set run.dir="$run" --set train.epochs=1 --set checkpoint.at_epoch_end=true \
  >"$work/train.txt" 2>&1 ||
  fail "training the tiny run: $(tail -n 20 "$work/train.txt")"
[[ -f $run/eval_valid.json && -f $run/model/model.safetensors ]] || fail "the run directory is incomplete"
pass "tiny run trained"

# ---- eval with the run's defaults -----------------------------------------------------
"$bin" eval "$run" >"$work/eval.txt" 2>"$work/err.txt" || fail "eval exited non-zero: $(cat "$work/err.txt")"
# The stage is the one trained (0, from metrics.jsonl), not the config file's last (1).
grep -q "stage 0; 16 items of generated-valid; decoded on the CPU (1 thread)$" "$work/eval.txt" ||
  fail "eval header (the run's run.threads, 1): $(cat "$work/eval.txt")"
grep -Eq "^accuracy [0-9.]+ \([0-9]+/16\), mean generated tokens [0-9.]+$" "$work/eval.txt" ||
  fail "eval summary: $(cat "$work/eval.txt")"
report=$run/eval_generated-valid.json
[[ -f $report ]] || fail "eval wrote no $report"
python3 - "$report" "$run/eval_valid.json" <<'EOF' || fail "eval report check"
import json, sys
r, t = (json.load(open(p)) for p in sys.argv[1:])
assert "accuracy" in r and r["total"] == 16 and len(r["items"]) == 16, r.keys()
assert 0 <= r["accuracy"] <= 1
# Same model, items, stage and decoding as the trainer's final evaluation.
assert [i["generated"] for i in r["items"]] == [i["generated"] for i in t["items"]], "eval differs from training's"
assert r["accuracy"] == t["accuracy"]
EOF
pass "eval RUN_DIR (defaults from the run)"

# --threads overrides the run's run.threads; the greedy answers stay those of the run.
"$bin" eval "$run" --threads 2 --out "$work/threads2.json" >"$work/eval2.txt" 2>"$work/err.txt" ||
  fail "eval --threads 2: $(cat "$work/err.txt")"
grep -q "decoded on the CPU (2 threads)$" "$work/eval2.txt" || fail "eval --threads 2 header: $(cat "$work/eval2.txt")"
python3 -c "
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert [i['prediction'] for i in a['items']] == [i['prediction'] for i in b['items']]
" "$work/threads2.json" "$run/eval_generated-valid.json" || fail "eval --threads 2 answers differ from 1 thread's"
pass "eval --threads"

# ---- eval with a data file and explicit options -----------------------------------------
"$bin" data generate prosqa --count 6 --seed 5 --out "$work/items.json" >/dev/null
"$bin" eval "$run" --data "$work/items.json" --stage 2 --max-items 4 --batch-size 3 --max-new-tokens 8 \
  --out "$work/e2.json" >"$work/eval.txt" 2>"$work/err.txt" || fail "eval --data: $(cat "$work/err.txt")"
grep -q "stage 2; 4 items of items" "$work/eval.txt" || fail "eval --data header: $(cat "$work/eval.txt")"
python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
assert r['total'] == 4 and r['dataset'] == 'items' and 'accuracy' in r
" "$work/e2.json" || fail "eval --data report"
pass "eval --data --stage --max-items --out"

# ---- eval --thought-tokens: the thoughts read through the LM head ----------------------
"$bin" eval "$run" --data "$work/items.json" --stage 2 --max-items 4 --max-new-tokens 8 --thought-tokens 3 \
  --out "$work/tt.json" >"$work/eval.txt" 2>"$work/err.txt" || fail "eval --thought-tokens: $(cat "$work/err.txt")"
grep -Eq '^item 0 thought 2: ("[^"]*" [0-9.]+ ?){3}$' "$work/eval.txt" ||
  fail "eval --thought-tokens printout: $(cat "$work/eval.txt")"
python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
for it in r['items']:
    assert it['thoughts'] == 2 and len(it['thought_tokens']) == 2, it
    for top in it['thought_tokens']:
        p = [t['p'] for t in top]
        assert len(top) == 3 and all(0 <= x <= 1 for x in p) and p == sorted(p, reverse=True), top
        assert all(isinstance(t['token'], str) and t['token'] for t in top), top
" "$work/tt.json" || fail "eval --thought-tokens report"
pass "eval --thought-tokens"

# ---- eval --thought-source: interventions on the thoughts -------------------------------
# zero and other write their own reports (named by the source); with batches of one item
# `other` has no other item to take a thought from, so every thought is kept and the
# generations are own's. (tests/curriculum/test_evaluation.cpp checks what is fed.)
common=(--data "$work/items.json" --stage 2 --max-items 4 --max-new-tokens 8)
for source in zero other; do
  "$bin" eval "$run" "${common[@]}" --batch-size 2 --thought-source $source >"$work/eval_$source.txt" 2>"$work/err.txt" ||
    fail "eval --thought-source $source: $(cat "$work/err.txt")"
  python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
assert r['thought_source'] == sys.argv[2] and r['total'] == 4, (r['thought_source'], r['total'])
for i, it in enumerate(r['items']):  # other: each thought's donor, an item of the same batch of 2
    donors = it.get('thought_donors', [])
    assert donors == [] if sys.argv[2] == 'zero' else len(donors) == it['thoughts'], it
    assert all(d // 2 == i // 2 for d in donors), (i, donors)
" "$run/eval_items_thoughts-$source.json" $source || fail "eval --thought-source $source report"
done
grep -q "thoughts: zero vectors in place of the hidden states" "$work/eval_zero.txt" || fail "zero: $(cat "$work/eval_zero.txt")"
grep -Eq "thoughts: another item's hidden state \([1-9][0-9]* swapped, 0 kept" "$work/eval_other.txt" ||
  fail "other: $(cat "$work/eval_other.txt")"
"$bin" eval "$run" "${common[@]}" --batch-size 1 --out "$work/own1.json" >/dev/null
"$bin" eval "$run" "${common[@]}" --batch-size 1 --thought-source other --out "$work/other1.json" >"$work/eval.txt"
grep -Eq "\(0 swapped, [1-9][0-9]* kept" "$work/eval.txt" || fail "other, batches of one: $(cat "$work/eval.txt")"
python3 -c "
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a['thought_source'] == 'own' and b['thought_source'] == 'other'
assert [i['generated'] for i in a['items']] == [i['generated'] for i in b['items']]
" "$work/own1.json" "$work/other1.json" || fail "other with batches of one differs from own"
expect 2 "--thought-source must be own, zero or other (got 'shuffle')" "$bin" eval "$run" --thought-source shuffle
pass "eval --thought-source zero|other"

# ---- eval under mpirun: the ranks share the batches, rank 0 reports -------------------
# 3 ranks, 16 items in batches of 2 at stage 2 (8 batches, shared unevenly): the report
# equals one process's byte for byte, also with `other` thoughts (their donors and
# counts), and only rank 0 prints.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for source in own other; do
  "$bin" eval "$run" --stage 2 --batch-size 2 --thought-source $source --out "$work/one_$source.json" \
    >"$work/one_$source.txt" ||
    fail "eval --thought-source $source in one process"
  mpirun --oversubscribe -np 3 "$bin" eval "$run" --stage 2 --batch-size 2 --thought-source $source \
    --out "$work/np3_$source.json" >"$work/np3_$source.txt" 2>"$work/err.txt" ||
    fail "mpirun -np 3 eval --thought-source $source: $(cat "$work/err.txt")"
  cmp -s "$work/one_$source.json" "$work/np3_$source.json" ||
    fail "mpirun -np 3 ($source): the report differs from one process's"
  grep -q "decoded on the CPU (3 ranks, 1 thread each)$" "$work/np3_$source.txt" ||
    fail "mpirun -np 3 ($source): header $(cat "$work/np3_$source.txt")"
  [[ $(grep -c '^accuracy' "$work/np3_$source.txt") == 1 ]] || fail "mpirun -np 3: more than rank 0 printed"
  diff <(grep -v '^run \|^report' "$work/one_$source.txt") <(grep -v '^run \|^report' "$work/np3_$source.txt") ||
    fail "mpirun -np 3 ($source): the printout differs from one process's"
done
grep -q '"thought_donors"' "$work/np3_other.json" || fail "mpirun -np 3 (other): no donors in the report"
pass "eval under mpirun -np 3: the reports (donors included) and printouts equal one process's"

# ---- eval --question: questions typed on the command line -----------------------------
# The first two questions of items.json answered as a batch give what the same items give
# through --data (the same batch, so the same generations and thoughts).
"$bin" eval "$run" --data "$work/items.json" --stage 2 --max-items 2 --max-new-tokens 8 --thought-tokens 3 \
  --out "$work/two.json" >/dev/null 2>"$work/err.txt" || fail "eval --data (2 items): $(cat "$work/err.txt")"
mapfile -t questions < <(python3 -c "
import json, sys
for item in json.load(open(sys.argv[1]))[:2]: print(item['question'])
" "$work/items.json")
"$bin" eval "$run" --question "${questions[0]}" --question "${questions[1]}" --stage 2 --max-new-tokens 8 \
  --thought-tokens 3 --out "$work/q.json" >"$work/q.txt" 2>"$work/err.txt" ||
  fail "eval --question: $(cat "$work/err.txt")"
grep -q "stage 2; 2 questions; decoded on the CPU" "$work/q.txt" || fail "eval --question header: $(cat "$work/q.txt")"
grep -Eq '^  thought 2: ("[^"]*" [0-9.]+ ?){3}$' "$work/q.txt" || fail "eval --question thoughts: $(cat "$work/q.txt")"
python3 - "$work/q.json" "$work/two.json" "$work/q.txt" "${questions[@]}" <<'PY' || fail "eval --question against --data (see above)"
import json, sys
q, d = (json.load(open(p)) for p in sys.argv[1:3])
text = open(sys.argv[3]).read()
assert len(q["items"]) == len(d["items"]) == 2
for k, (a, b) in enumerate(zip(q["items"], d["items"])):
    assert a["generated"] == b["generated"] and a["prediction"] == b["prediction"], (a, b)
    assert a["thought_tokens"] == b["thought_tokens"], (a["thought_tokens"], b["thought_tokens"])
    assert f"question {k + 1}: {sys.argv[4 + k]}\n" in text, text
    assert f"  answer: {a['prediction']}\n" in text, text
PY
# Without --out nothing is written; a word the run never saw is named; 5 thought tokens by default.
before=$(ls "$run")
"$bin" eval "$run" --question "Is Tom a zzzqqq or a wumpus?" --stage 1 --max-new-tokens 4 >"$work/q1.txt" 2>&1 ||
  fail "eval --question (one): $(cat "$work/q1.txt")"
[[ "$(ls "$run")" == "$before" ]] || fail "eval --question without --out wrote into the run directory"
grep -q "note: 1 word(s) of 'Is Tom a zzzqqq or a wumpus?' are not in the run's vocabulary and become <unk>: zzzqqq" \
  "$work/q1.txt" || fail "eval --question: the unknown word is not named: $(cat "$work/q1.txt")"
grep -Eq '^  thought 1: ("[^"]*" [0-9.]+ ?){5}$' "$work/q1.txt" ||
  fail "eval --question default thought tokens: $(cat "$work/q1.txt")"
expect 2 "--question answers the questions given: not with --data or --max-items" \
  "$bin" eval "$run" --question "Is Tom a wumpus?" --data "$work/items.json"
expect 1 "--question: the question is empty" "$bin" eval "$run" --question ""
pass "eval --question (= the same items through --data; unknown words named; nothing written without --out)"

# ---- probe ------------------------------------------------------------------------------
"$bin" probe "$run" --items 5 --thoughts 2 --out "$work/p.json" --plot "$work/p.png" >"$work/probe.txt" 2>"$work/err.txt" ||
  fail "probe exited non-zero: $(cat "$work/err.txt")"
[[ $(head -c 8 "$work/p.png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] || fail "probe --plot wrote no PNG"
grep -q "^plot: $work/p.png$" "$work/probe.txt" || fail "probe does not name its plot"
for k in 0 1 2; do grep -q "^k=$k " "$work/probe.txt" || fail "probe prints no table for k=$k"; done
grep -q "| rank | items | mean value | mean cumulative |" "$work/probe.txt" || fail "probe prints no rank table"
grep -q "| height | nodes | mean value |" "$work/probe.txt" || fail "probe prints no height table"
python3 - "$work/p.json" <<'EOF' || fail "probe report check"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["items"] == 5 and len(p["per_item"]) == 5
assert [s["k"] for s in p["summary"]] == [0, 1, 2]
for item in p["per_item"]:
    for th in item["thoughts"]:
        vals = [n["value"] for n in th["frontier"]]
        assert all(0 <= v <= 1 for v in vals) and vals == sorted(vals, reverse=True)
        assert abs(sum(vals) - th["frontier_mass"]) < 1e-9 and th["frontier_mass"] <= 1 + 1e-9
assert p["summary"][1]["top"][0]["rank"] == 1 and p["summary"][1]["items"] == 5
EOF
"$bin" probe "$run" --items 2 --thoughts 1 >/dev/null 2>&1 || fail "probe with the default --out"
[[ -f $run/probe_generated-valid.json ]] || fail "probe did not write RUN_DIR/probe_generated-valid.json"
pass "probe"
# Under mpirun the ranks share the items (here 3 ranks, 5 items): the same report.
mpirun --oversubscribe -np 3 "$bin" probe "$run" --items 5 --thoughts 2 --out "$work/p3.json" >"$work/probe3.txt" \
  2>"$work/err.txt" || fail "mpirun -np 3 probe: $(cat "$work/err.txt")"
cmp -s "$work/p.json" "$work/p3.json" || fail "mpirun -np 3 probe: the report differs from one process's"
grep -q "k = 0..2 (3 ranks)$" "$work/probe3.txt" || fail "mpirun -np 3 probe: header $(head -n 1 "$work/probe3.txt")"
pass "probe under mpirun -np 3: the report equals one process's"
# --checkpoint: the run's last checkpoint (step 4, the end of its one epoch) holds the
# final model's weights, so its probe report is the final model's, under its own name.
"$bin" probe "$run" --items 5 --thoughts 2 --checkpoint latest >"$work/probe_ckpt.txt" 2>"$work/err.txt" ||
  fail "probe --checkpoint latest: $(cat "$work/err.txt")"
grep -q "^run $run (its checkpoint $run/checkpoints/step-00000004, step 4): method coconut, c=1, trained to stage 0" \
  "$work/probe_ckpt.txt" || fail "probe --checkpoint header: $(head -n 1 "$work/probe_ckpt.txt")"
cmp -s "$work/p.json" "$run/probe_generated-valid_step-00000004.json" ||
  fail "probe --checkpoint latest: the report differs from the final model's"
expect 1 "is not a finished run with a best model (eval.keep_best)" "$bin" probe "$run" --best
expect 2 "--best and --checkpoint name two models: give one" "$bin" probe "$run" --best --checkpoint 4
pass "probe --checkpoint latest = the final model; --best without a best model refused"

# ---- errors -----------------------------------------------------------------------------
expect 1 "run directory '$work/nope' does not exist" "$bin" eval "$work/nope"
expect 1 "run directory '$work/nope' does not exist" "$bin" probe "$work/nope"
expect 2 "unknown option '--bogus'" "$bin" eval "$run" --bogus
expect 2 "option --stage expects an integer" "$bin" eval "$run" --stage minus
expect 2 "option --thoughts expects an integer" "$bin" probe "$run" --thoughts -1
rc=0
"$bin" probe >"$work/out.txt" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "usage: coconut probe RUN_DIR" "$work/out.txt" || fail "probe without arguments: exit $rc"
echo '[{"question": "Tom is a wumpus. Is Tom a wumpus or yumpus?", "steps": [], "answer": "Tom is a wumpus."}]' \
  >"$work/nograph.json"
expect 1 "nograph.json, item 0: probe: the item has no ProsQA graph" "$bin" probe "$run" --data "$work/nograph.json"
expect 1 "missing.json" "$bin" eval "$run" --data "$work/missing.json"
expect 2 "--device must be cpu or cuda (got 'gpu')" "$bin" eval "$run" --device gpu
expect 2 "option --thought-tokens expects an integer" "$bin" eval "$run" --thought-tokens 0
expect 2 "option --threads expects an integer" "$bin" eval "$run" --threads -1
expect 2 "option --threads expects an integer" "$bin" probe "$run" --threads x
# Without a GPU (or without the CUDA backend) decoding on cuda is refused with the reason.
if ! nvidia-smi >/dev/null 2>&1; then
  expect 1 "decoding on cuda: " "$bin" eval "$run" --device cuda --out "$work/never.json"
  expect 1 "decoding on cuda: " "$bin" eval "$run" --device cuda --thought-source other --out "$work/never.json"
  [[ ! -e $work/never.json ]] || fail "a refused --device cuda wrote a report"
fi
pass "errors: missing run, usage, data without graph, missing data file, --device"
