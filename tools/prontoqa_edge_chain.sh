#!/usr/bin/env bash
# The pre-training chain of docs/results.md sessions 13-17, as one resumable command: a
# small model from scratch learns to copy, then to look a key's value up in the question,
# then ProntoQA in the edge form by CoT; the latent methods then start from that CoT model.
# (From scratch, our models and PyTorch's never learn the lookup; see docs/results.md.)
#
#   tools/prontoqa_edge_chain.sh [--out runs/chain] [--layers 2] [--cot-epochs 20]
#       [--epochs 24] [--epochs-per-stage 3] [--methods "coconut pause_as_thought"]
#       [--suffix TAG] [--quick] [--bin build/launcher/coconut] [--set KEY=VALUE]...
#
# Steps (each skipped when its model is already there, so a rerun continues):
#  1. data: the first 8,963 generated ProsQA items (seed 1) in the graph form fix the
#     word vocabulary of the pre-training; ProntoQA 9,000 training items (seed 1) and 800
#     test items (seed 2) in the edge form (tools/pilot_prosqa_forms.py);
#  2. copy: 1 epoch at lr 1e-3, then 4 at 2e-3 (20,001 items of 20-60 random words);
#  3. lookup: 4-8 pairs, 6 epochs at lr 2e-3; then 15-40 pairs, 4 epochs at 2e-3 and
#     6 at 1e-3 (20,001 items each); scored with lookup-score;
#  4. CoT on the ProntoQA edge form, --cot-epochs epochs (2 a stage, so its evaluations
#     match the later runs'), scored with prontoqa-score;
#  5. each of --methods from the CoT model: --epochs epochs, --epochs-per-stage a stage,
#     evaluated at the end of each stage, plus --set overrides (e.g. model.thought_scale);
#     the run is OUT/METHOD then OUT/METHOD+TAG with --suffix TAG, so variants sit side by side.
# Every run uses 1 thread: the thread count changes the bits, and with 2 threads the copy
# model of session 17 did not learn to copy in its 5 epochs.
# --layers sets model.n_layer of the copy run; the later runs take the shape from it.
# OUT/summary.md gets one line per finished run (accuracy, final loss, wall seconds).
# --quick runs every step on a few dozen items, 1 epoch each, a 1-layer d_model 32 model
# and methods of 7 epochs (1 a stage): the plumbing in seconds (tests/launcher).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
quick=0
for a in "$@"; do [[ $a == --quick ]] && quick=1; done
# Items generated (ProsQA for the vocabulary, each pre-training task and its validation,
# ProntoQA's training and test splits) and the pre-training epochs; --quick shrinks them.
n_prosqa=8963 n_task=20000 n_task_valid=200 n_pq=9000 n_pq_test=800
copy_epochs=(1 4) lookup_epochs=(6 4 6) layers=2 cot_epochs=20 epochs=24 epochs_per_stage=3 shape=()
if ((quick)); then
  n_prosqa=100 n_task=60 n_task_valid=8 n_pq=60 n_pq_test=12
  copy_epochs=(1 1) lookup_epochs=(1 1 1) layers=1 cot_epochs=2 epochs=7 epochs_per_stage=1
  shape=(--set model.d_model=32 --set model.n_head=2)
fi
out=runs/chain methods="coconut" suffix= bin=$repo/build/launcher/coconut overrides=()
usage() { sed -n '7,9p' "$0" | sed 's/^# *//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) out=${2:?}; shift 2 ;;
    --layers) layers=${2:?}; shift 2 ;;
    --cot-epochs) cot_epochs=${2:?}; shift 2 ;;
    --epochs) epochs=${2:?}; shift 2 ;;
    --epochs-per-stage) epochs_per_stage=${2:?}; shift 2 ;;
    --methods) methods=${2:?}; shift 2 ;;
    --suffix) suffix=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --set) overrides+=(--set "${2:?}"); shift 2 ;;
    --quick) shift ;;
    *) usage ;;
  esac
done
[[ -x $bin ]] || { echo "no coconut binary at $bin: build it first (cmake --build build --target coconut)" >&2; exit 2; }
for v in layers cot_epochs epochs epochs_per_stage; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "--${v//_/-} must be a positive integer, got '${!v}'" >&2; exit 2; }
done
[[ -n $methods ]] || { echo "--methods is empty" >&2; exit 2; }
T="python3 $repo/tools/pilot_prosqa_forms.py"
valid=$repo/../shared/data/prosqa_valid.json
data=$out/data
mkdir -p "$data"
log() { echo "[chain $(date +%H:%M:%S)] $*"; }

# train NAME ARGS...: one run in OUT/NAME, skipped when its model exists; logs to OUT/NAME.log.
train() {
  local name=$1; shift
  if [[ -f $out/$name/model/config.json ]]; then log "$name: done before"; return; fi
  log "$name: training"
  local t0=$SECONDS
  "$bin" train "$@" --set run.threads=1 --set run.dir="$out/$name" >"$out/$name.log" 2>&1 ||
    { echo "$name failed: see $out/$name.log" >&2; exit 1; }
  python3 - "$out/$name" "$name" $((SECONDS - t0)) >>"$out/summary.md" <<'PY'
import json, sys
run, name, seconds = sys.argv[1:]
e = json.load(open(f"{run}/eval_valid.json"))
loss = [r for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "loss" in r][-1]["loss"]
print(f"| {name} | {100 * e['correct'] / e['total']:.1f}% ({e['correct']}/{e['total']}) | {loss:.4f} | {seconds} |")
PY
  tail -1 "$out/summary.md"
}

# ---- 1. data ------------------------------------------------------------------------------
[[ -f $data/prosqa_8963.json ]] || "$bin" data generate prosqa --count $n_prosqa --seed 1 --out "$data/prosqa_8963.json" >/dev/null
[[ -f $data/graph_train.json ]] || $T graph-form "$data/prosqa_8963.json" "$data/graph_train.json"
[[ -f $data/graph_valid.json ]] || $T graph-form "$valid" "$data/graph_valid.json"
[[ -f $data/graph_vocab.txt ]] || "$bin" data tokenizer "$data/graph_train.json" "$data/graph_valid.json" --out "$data/graph_vocab.txt" >/dev/null
V=$data/graph_vocab.txt
[[ -f $data/copy_train.json ]] || $T copy "$V" $n_task "$data/copy_train.json" 1
[[ -f $data/copy_valid.json ]] || $T copy "$V" $n_task_valid "$data/copy_valid.json" 2
[[ -f $data/lookup4_train.json ]] || $T lookup "$V" $n_task "$data/lookup4_train.json" 1 8 4 8
[[ -f $data/lookup4_valid.json ]] || $T lookup "$V" $n_task_valid "$data/lookup4_valid.json" 2 8 4 8
[[ -f $data/lookup_train.json ]] || $T lookup "$V" $n_task "$data/lookup_train.json" 1 16 15 40
[[ -f $data/lookup_valid.json ]] || $T lookup "$V" $n_task_valid "$data/lookup_valid.json" 2 16 15 40
[[ -f $data/pq_train.json ]] || "$bin" data generate prontoqa --count $n_pq --seed 1 --out "$data/pq_train.json" >/dev/null
[[ -f $data/pq_test.json ]] || "$bin" data generate prontoqa --count $n_pq_test --seed 2 --out "$data/pq_test.json" >/dev/null
[[ -f $data/pqe_train.json ]] || $T prontoqa-form "$data/pq_train.json" "$data/pqe_train.json"
[[ -f $data/pqe_test.json ]] || $T prontoqa-form "$data/pq_test.json" "$data/pqe_test.json"
[[ -f $out/summary.md ]] || printf '| run | accuracy | final loss | wall s |\n|---|---|---|---|\n' >"$out/summary.md"

# ---- 2. copy ------------------------------------------------------------------------------
base=("$repo/configs/reproduce_prosqa.yaml" --set curriculum.method=cot --set train.batch_size=8)
train copy1 "${base[@]}" --set model.n_layer="$layers" ${shape[@]+"${shape[@]}"} --set data.train_file="$data/copy_train.json" \
  --set data.valid_file="$data/copy_valid.json" --set train.epochs=${copy_epochs[0]} --set eval.max_new_tokens=80
train copy2 "${base[@]}" --set data.train_file="$data/copy_train.json" --set data.valid_file="$data/copy_valid.json" \
  --set train.epochs=${copy_epochs[1]} --set train.lr=0.002 --set eval.max_new_tokens=80 --set model.init_from="$out/copy1/model"

# ---- 3. lookup ----------------------------------------------------------------------------
lookup=("${base[@]}" --set eval.max_items=200)
train lookup4 "${lookup[@]}" --set data.train_file="$data/lookup4_train.json" --set data.valid_file="$data/lookup4_valid.json" \
  --set train.epochs=${lookup_epochs[0]} --set train.lr=0.002 --set eval.max_new_tokens=40 --set model.init_from="$out/copy2/model"
$T lookup-score "$data/lookup4_valid.json" "$out/lookup4/eval_valid.json"
L=(--set data.train_file="$data/lookup_train.json" --set data.valid_file="$data/lookup_valid.json" --set eval.max_new_tokens=64)
train lookup40a "${lookup[@]}" "${L[@]}" --set train.epochs=${lookup_epochs[1]} --set train.lr=0.002 --set model.init_from="$out/lookup4/model"
train lookup40b "${lookup[@]}" "${L[@]}" --set train.epochs=${lookup_epochs[2]} --set train.lr=0.001 --set model.init_from="$out/lookup40a/model"
$T lookup-score "$data/lookup_valid.json" "$out/lookup40b/eval_valid.json"

# ---- 4. CoT on the ProntoQA edge form -----------------------------------------------------
P=("$repo/configs/reproduce_prontoqa.yaml" --set data.train_file="$data/pqe_train.json"
   --set data.valid_file="$data/pqe_test.json" --set eval.max_new_tokens=40)
train cot "${P[@]}" --set curriculum.method=cot --set train.epochs="$cot_epochs" --set curriculum.epochs_per_stage=2 \
  --set eval.every_epochs=4 --set model.init_from="$out/lookup40b/model"
$T prontoqa-score "$data/pqe_test.json" "$out/cot/eval_valid.json"

# ---- 5. the methods from the CoT model ----------------------------------------------------
for m in $methods; do
  train "$m$suffix" "${P[@]}" --set curriculum.method="$m" --set train.epochs="$epochs" \
    --set curriculum.epochs_per_stage="$epochs_per_stage" --set eval.every_epochs="$epochs_per_stage" \
    --set model.init_from="$out/cot/model" ${overrides[@]+"${overrides[@]}"}
done
log "done: $out/summary.md"
