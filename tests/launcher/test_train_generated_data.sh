#!/usr/bin/env bash
# `coconut train` on each generated dataset with its shape key: the run's log states the
# steps per item the key asks for (ProntoQA: hops + 1; running sums: digits - 1), and
# `--dry-run` names the key's value.
#   test_train_generated_data.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$2
mkdir -p "$3"
tmp=$(mktemp -d "$3/generated.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, train_run

args=("$configs/prosqa_tiny.yaml" --set data.generate_train=16 --set data.generate_valid=4 --set train.epochs=1
      --set eval.max_new_tokens=4 --set run.threads=1)
# case_of NAME STEPS SHAPE SETTINGS...: one epoch, then the log's steps and the dry run's SHAPE.
case_of() {
  local name=$1 steps=$2 shape=$3
  shift 3
  train_run "$name" 1 "$@"
  grep -q "data: 16 train ($steps steps per item), 4 generated-valid" "$tmp/$name.log" ||
    fail "$name: the log does not say $steps steps per item: $(grep 'data:' "$tmp/$name.log")"
  "$bin" train "${args[@]}" "$@" --dry-run >"$tmp/$name.dry.txt"
  grep -q "data: generated .*seed 2024$shape)" "$tmp/$name.dry.txt" ||
    fail "$name: the dry run's data line: $(grep '^data:' "$tmp/$name.dry.txt")"
  pass "$name: $steps steps per item"
}
case_of prontoqa_2_hops 3 ", 2 hops" --set data.kind=prontoqa --set data.hops=2
case_of prontoqa_default 6 ", 5 hops" --set data.kind=prontoqa
case_of running_sum_3_digits 2 ", 3 digits" --set data.kind=running_sum --set data.digits=3
