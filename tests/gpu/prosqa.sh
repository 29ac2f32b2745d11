#!/usr/bin/env bash
# ProsQA from scratch on one GPU (issue #8; docs/results.md): the experiment the 2-core
# machine cannot afford. CoT, Coconut (c = 1, 6 latent stages, 1 epoch per stage) and
# Coconut without the curriculum (the paper's three ProsQA claims) train side by side on
# the same GPU for MINUTES each, a GPT-2 model larger than the CPU
# reproduction's (default 6 layers, d_model 384, 6 heads, bf16), on the paper's 17,886
# generated training items; each is evaluated on the official validation split, every
# 5 epochs and at the end. Prints one line per method and writes OUT/table.md.
#   usage: tests/gpu/prosqa.sh [build-dir=build] [minutes=5] [out=runs/prosqa-gpu] [--items N]
#                              [--methods cot,coconut,no_curriculum] [--set KEY=VALUE]...
# --items N trains on the first N generated items (default 17886). The --set overrides go
# to every run after the script's own (e.g. --set train.device=cpu --set model.n_layer=1
# checks the plumbing on a machine without a GPU). The validation split is
# ../shared/data/prosqa_valid.json, or .gpurun/prosqa_valid.json where the checkout has
# no ../shared (tests/gpu/pack.sh puts a copy there). Needs the coconut binary of the
# build folder (tests/gpu/pack.sh carries it) and, with LD_LIBRARY_PATH, its libraries.
set -euo pipefail
build=${1:-build}
minutes=${2:-5}
out=${3:-runs/prosqa-gpu}
shift $(( $# < 3 ? $# : 3 ))
items=17886 methods=cot,coconut,no_curriculum overrides=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --items) items=${2:?}; shift 2 ;;
    --methods) methods=${2:?}; shift 2 ;;
    --set) overrides+=(--set "${2:?}"); shift 2 ;;
    *) echo "prosqa.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
bin=$build/launcher/coconut
[[ -x $bin ]] || { echo "prosqa.sh: no coconut binary at $bin" >&2; exit 2; }
[[ $minutes =~ ^[0-9]+([.][0-9]+)?$ && $items =~ ^[0-9]+$ ]] || { echo "prosqa.sh: bad minutes or items" >&2; exit 2; }
valid=../shared/data/prosqa_valid.json
[[ -f $valid ]] || valid=.gpurun/prosqa_valid.json
[[ -f $valid ]] || { echo "prosqa.sh: no prosqa_valid.json in ../shared/data or .gpurun" >&2; exit 2; }

mkdir -p "$out"
train=$out/prosqa_train_$items.json
[[ -f $train ]] || "$bin" data generate prosqa --count "$items" --seed 1 --out "$train"

# Epochs: the time cap (train.max_minutes) ends each run at an epoch end; 40 is more than
# 5 minutes buy at the default size, so the cap decides. Coconut reaches its last stage
# (6 thoughts) after epoch 7.
common=(--set data.train_file="$train" --set data.valid_file="$valid" --set train.max_minutes="$minutes"
        --set train.epochs=40 --set train.device=cuda --set train.precision=bf16
        --set model.n_layer=6 --set model.d_model=384 --set model.n_head=6
        --set train.batch_size=32 --set train.lr=5e-4 --set eval.every_epochs=5)
IFS=, read -ra method_list <<< "$methods"
pids=()
for method in "${method_list[@]}"; do
  "$bin" train configs/reproduce_prosqa.yaml "${common[@]}" --set curriculum.method=$method \
    --set run.dir="$out/$method" "${overrides[@]}" >"$out/$method.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done

{
  echo "| method | accuracy on prosqa_valid.json | epochs | final stage | final loss | log |"
  echo "|---|---|---|---|---|---|"
  for method in "${method_list[@]}"; do
    python3 - "$out/$method" "$method" <<'PY'
import json, pathlib, sys
run, method = pathlib.Path(sys.argv[1]), sys.argv[2]
try:
    e = json.loads((run / "eval_valid.json").read_text())
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    last = rows[-1]
    print(f"| {method} | {100 * e['accuracy']:.1f}% ({e['correct']}/{e['total']}) | {last['epoch'] + 1} "
          f"| {last.get('stage')} | {last.get('loss', float('nan')):.4f} | {run}.log |")
except (OSError, ValueError, KeyError, IndexError) as err:
    print(f"| {method} | failed ({err}) | | | | {run}.log |")
PY
  done
} | tee "$out/table.md"
exit $status
