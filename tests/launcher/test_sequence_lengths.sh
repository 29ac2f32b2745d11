#!/usr/bin/env bash
# Sequence lengths against model.max_positions, checked when `coconut train` starts
# (launcher/sequence_lengths.h):
#  - the longest training micro-batch of a Coconut run comes at a latent stage, where the
#    alignment of the first <latent>s makes it longer than any sequence alone. With
#    max_positions one below it the run stops at once (exit 2, no step taken) naming the
#    epoch; with max_positions equal to it the whole run trains (the measure is exact);
#  - an evaluation prompt with no position left to generate stops the run at once too;
#  - prompts that leave fewer than eval.max_new_tokens positions are a warning only.
#   test_sequence_lengths.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$2
mkdir -p "$3"
tmp=$(mktemp -d "$3/lengths.XXXXXX")
work=$tmp
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect, train_run

# 3 epochs, stages 0, 1, 2: one evaluation, at the end.
args=("$configs/prosqa_tiny.yaml" --set data.generate_train=96 --set data.generate_valid=4 --set train.epochs=3
      --set curriculum.epochs_per_stage=1 --set train.batch_size=16 --set eval.every_epochs=3
      --set eval.max_new_tokens=4 --set run.threads=1)

# max_positions 16 fits nothing: the message gives the longest micro-batch and sequence.
expect 2 "does not fit model.max_positions 16" "$bin" train "${args[@]}" --set run.dir="$tmp/r16" \
  --set model.max_positions=16
message=$(cat "$work/err.txt")
longest=$(sed -n 's/.* has \([0-9]*\) columns;.*/\1/p' <<<"$message")
[[ -n $longest ]] || fail "no column count in: $message"
[[ $message == *"longest sequence alone has"* ]] || fail "16 positions: not named as a sequence too long: $message"

# One below: stopped before any step, naming a latent stage's batch and the alignment.
expect 2 "has $longest columns" "$bin" train "${args[@]}" --set run.dir="$tmp/below" \
  --set model.max_positions=$((longest - 1))
grep -q "aligning the first <latent>" "$work/err.txt" ||
  fail "the longest micro-batch is not an alignment case: $(cat "$work/err.txt")"
grep -Eq "in epoch [12] \(stage [12]\)" "$work/err.txt" || fail "not at a latent stage: $(cat "$work/err.txt")"
# The log (stderr) has the lengths line and no progress line of a step.
grep -q "sequence lengths: the longest training micro-batch has $longest columns" "$work/err.txt" ||
  fail "no lengths line in the log: $(cat "$work/err.txt")"
grep -Eq "stage [0-9]+ step [0-9]+/" "$work/err.txt" && fail "a step was taken before the check: $(cat "$work/err.txt")"
[[ ! -e $tmp/below/steps.jsonl || ! -s $tmp/below/steps.jsonl ]] || fail "steps.jsonl written before the check"
pass "max_positions $((longest - 1)): stopped at start (micro-batch of $longest columns)"

# The dry run measures the same (train.micro_batch_size set): one position fewer is a
# problem (exit 2), exactly the longest is not; without the micro-batch size it measures
# whole batches and only warns.
expect 2 "has $longest columns" "$bin" train "${args[@]}" --set train.micro_batch_size=16 --dry-run \
  --set model.max_positions=$((longest - 1))
"$bin" train "${args[@]}" --set train.micro_batch_size=16 --dry-run --set model.max_positions="$longest" \
  >"$work/dry.txt" || fail "dry run at $longest positions: $(cat "$work/dry.txt")"
grep -q "sequence lengths: the longest training micro-batch has $longest columns (epoch" "$work/dry.txt" ||
  fail "dry run: no lengths line: $(cat "$work/dry.txt")"
"$bin" train "${args[@]}" --dry-run --set model.max_positions=$((longest - 1)) >"$work/dry.txt" ||
  fail "dry run without a micro-batch size: $(cat "$work/dry.txt")"
grep -q "whole batches would not fit" "$work/dry.txt" || fail "dry run: no whole-batch warning: $(cat "$work/dry.txt")"
pass "dry run: the same measure, a problem at $((longest - 1)) positions with micro-batches of 16"

# --dry-run --np N: the micro-batches the job would use, measured exactly. One process
# trains whole batches (a problem one position below, as above); pp 2 x dp 2 takes
# micro-batches of 2, and the dry run's measure is what `coconut train` under mpirun -np 4
# logs at its start. A grid the job cannot make, and --np without --dry-run: exit 2.
expect 2 "has $longest columns" "$bin" train "${args[@]}" --dry-run --np 1 --set model.max_positions=$((longest - 1))
grid=(--set parallel.pp=2 --set model.max_positions=$((longest - 1)))
"$bin" train "${args[@]}" "${grid[@]}" --dry-run --np 4 >"$work/dry.txt" 2>&1 || true
grep -q "micro-batches of 2 (default for pp 2 x dp 2)" "$work/dry.txt" || fail "dry run --np 4: $(cat "$work/dry.txt")"
dry_line=$(grep "^sequence lengths: the longest training micro-batch" "$work/dry.txt") ||
  fail "dry run --np 4: no lengths line: $(cat "$work/dry.txt")"
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np 4 "$bin" train "${args[@]}" \
  "${grid[@]}" --set run.dir="$tmp/np4" --set checkpoint.stop_after_steps=1 >"$work/np4.txt" 2>&1 ||
  fail "mpirun -np 4 (pp 2): $(tail -n 20 "$work/np4.txt")"
grep -qF "${dry_line#sequence lengths: }" "$work/np4.txt" ||
  fail "the dry run measured '$dry_line'; the run logged: $(grep "sequence lengths" "$work/np4.txt")"
expect 2 "parallel.pp (2) does not divide the job's 3 ranks" "$bin" train "${args[@]}" "${grid[@]}" --dry-run --np 3
expect 2 "\-\-np goes with \-\-dry-run" "$bin" train "${args[@]}" --np 4
pass "dry run --np: one process whole batches, pp 2 x dp 2 micro-batches of 2 as the run measures them; a wrong grid refused"

# Exactly the longest: the three epochs train, evaluate and export.
train_run exact 1 --set model.max_positions="$longest"
grep -q "the longest training micro-batch has $longest columns" "$tmp/exact.log" || fail "exact: the log's lengths line"
[[ $(wc -l <"$tmp/exact/steps.jsonl") -eq 18 ]] || fail "exact: $(wc -l <"$tmp/exact/steps.jsonl") steps, expected 18"
[[ -f $tmp/exact/model/model.safetensors ]] || fail "exact: no exported model"
pass "max_positions $longest: 3 epochs trained"

# The measure follows the options that shape the batches: each run trains at the
# positions its measure gives (no micro-batch is longer), with random stages per item,
# padded columns, and iCoT's shrinking chains.
for variant in "curriculum.uniform_prob=0.5" "train.pad_columns=8" "curriculum.method=icot"; do
  expect 2 "does not fit model.max_positions 16" "$bin" train "${args[@]}" --set "$variant" \
    --set run.dir="$tmp/v16" --set model.max_positions=16
  n=$(sed -n 's/.* has \([0-9]*\) columns;.*/\1/p' "$work/err.txt")
  [[ -n $n ]] || fail "$variant: no column count in: $(cat "$work/err.txt")"
  train_run "variant_${variant%%=*}" 1 --set "$variant" --set model.max_positions="$n"
  pass "$variant: trained within the measured $n positions"
done

# Evaluation prompts: training items of a few words, a validation question of 300 words.
python3 - "$tmp" <<'PY'
import json, os, sys
tmp = sys.argv[1]
train = [{"question": f"q{i} a b", "steps": ["s one", "s two"], "answer": f"x{i % 2}"} for i in range(16)]
long_q = " ".join(f"w{i % 7}" for i in range(300))
valid = [{"question": "q0 a b", "steps": ["s one", "s two"], "answer": "x0"},
         {"question": long_q, "steps": ["s one", "s two"], "answer": "x1"}]
for name, items in (("train", train), ("valid", valid)):
    with open(os.path.join(tmp, f"{name}.json"), "w") as f:
        json.dump(items, f)
PY
args=("$configs/prosqa_tiny.yaml" --set data.kind=file --set data.train_file="$tmp/train.json"
      --set data.valid_file="$tmp/valid.json" --set train.epochs=2 --set curriculum.epochs_per_stage=1
      --set train.batch_size=8 --set eval.max_new_tokens=8 --set run.threads=1)
expect 2 "evaluation prompt of valid.json item 1 at stage" "$bin" train "${args[@]}" --set run.dir="$tmp/prompt" \
  --set model.max_positions=64
pass "a prompt longer than max_positions: stopped at start"
# Room for a few tokens but not eval.max_new_tokens: a warning, and the run ends normally.
prompt=$(sed -n 's/.*the longest evaluation prompt \([0-9]*\) tokens.*/\1/p' "$work/err.txt")
[[ -n $prompt ]] || fail "no prompt length in the log"
train_run cut 1 --set model.max_positions=$((prompt + 2))
grep -q "evaluation prompts (items x stages) leave fewer than eval.max_new_tokens 8" "$tmp/cut.log" ||
  fail "no warning of cut generation: $(grep -i 'sequence lengths' "$tmp/cut.log")"
pass "prompt of $prompt tokens with max_positions $((prompt + 2)): warned, trained"
