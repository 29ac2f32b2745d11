#!/usr/bin/env bash
# Every config under configs/ must stay loadable: training configs through
# `coconut train --dry-run` (input files may be missing: they are listed, not required),
# sweep files through `coconut sweep --dry-run`. Both must exit 0 and write nothing.
#   test_configs_dry_run.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$(realpath "$1") configs=$(cd "$2" && pwd)
mkdir -p "$3"
work=$(mktemp -d "$3/dry_run.XXXXXX")
trap 'rm -rf "$work"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

# From an empty folder, so that relative run and output directories would show up here.
cd "$work"
count=0
while IFS= read -r f; do
  rel=${f#"$configs"/}
  case $rel in
    sweeps/*) "$bin" sweep "$f" --dry-run >out.txt 2>err.txt || fail "coconut sweep --dry-run $rel: $(cat err.txt)"
              grep -q "every run's config is valid" out.txt || fail "$rel: $(cat out.txt)" ;;
    *) "$bin" train "$f" --dry-run >out.txt 2>err.txt || fail "coconut train --dry-run $rel: $(cat err.txt) $(cat out.txt)"
       grep -q "the configuration is valid" out.txt || fail "$rel: $(cat out.txt)"
       grep -Eq "^model .*[0-9]+\.[0-9]+M parameters" out.txt || fail "$rel: no model size: $(cat out.txt)" ;;
  esac
  rm -f out.txt err.txt
  [[ -z $(ls -A) ]] || fail "the dry run of $rel wrote $(ls -A)"
  echo "ok: $rel"
  count=$((count + 1))
done < <(find "$configs" -name '*.yaml' | sort)
[[ $count -ge 10 ]] || fail "only $count configs found under $configs"

# The paper-sized configs have the GPT-2 124M shape: 85.84M parameters besides the token
# embedding, i.e. 1024 C (positions) + 12 (12 C^2 + 13 C) (layers) + 2 C (final norm) with
# C = 768 -- 124.44M with GPT-2's 50257-token vocabulary, Hugging Face's count for gpt2.
"$bin" train "$configs/prosqa.yaml" --dry-run >out.txt
grep -q "12 layers, d_model 768, 12 heads, 1024 positions: 85.84M parameters + 768 per vocabulary entry" out.txt ||
  fail "prosqa.yaml model size: $(grep '^model' out.txt)"
echo "all $count configs load"
