#!/usr/bin/env bash
# The paper's Table 1 on ProsQA and ProntoQA, sized to a time budget on this CPU machine
# (issue #8; docs/results.md). One command, resumable: rerun it after an interruption.
#
#   tools/reproduce.sh [--budget-minutes 120] [--out runs/reproduce] [--epochs 10]
#                      [--bin build/launcher/coconut] [--quick] [--plan-only] [--set KEY=VALUE]...
#
# Steps (each skipped when its output is already there):
#  1. data: ProsQA 17,886 training items (the paper's size) and ProntoQA 9,000 (5 hops)
#     with `coconut data generate`; ProsQA is evaluated on the official validation split
#     ../shared/data/prosqa_valid.json, ProntoQA on a generated test split of 800 items
#     (another seed);
#  2. calibration: one epoch of cot (one pass) and of no_curriculum (7 passes) on the
#     first 256 items of each dataset, plus the final evaluation of 32 items, timed;
#  3. plan (OUT/plan.json, reused on a rerun so that resumed runs keep their settings):
#     every run trains the same --epochs (curriculum: 1 epoch per stage for 10 epochs or
#     fewer, else epochs/10 as the paper's 5 of 50) on the first N items of its dataset,
#     N chosen from the measured seconds per item so that the runs' time caps
#     (train.max_minutes, 1.25 x a sweep's slowest estimate) fill the budget
#     (tools/reproduce_plan.py); a run past its cap ends at an epoch end, evaluated;
#  4. three sweeps (`coconut sweep`: interrupted runs resume from their last epoch):
#     configs/sweeps/reproduce_prosqa_methods.yaml (cot, no_cot, pause_as_thought,
#     no_curriculum), reproduce_prosqa_c.yaml (coconut with c = 0, 1, 2; c = 1 is the
#     Table 1 row), reproduce_prontoqa.yaml (the five methods);
#  5. `coconut probe` on the coconut ProsQA model (the frontier-value plot);
#  6. OUT/results.md: our accuracies beside the paper's Table 1, model and data sizes,
#     epochs, final stages and wall times, and the two plots in OUT/.
# --quick runs the same steps on a few dozen items, a 1-layer model and 7 epochs (budget 2
# minutes); --plan-only stops after step 3 (what the budget buys: OUT/plan.json).
# --set KEY=VALUE (repeatable) is passed to every calibration and training run, after the
# configs' own settings: e.g. --set model.n_layer=4 --set model.d_model=128 on a machine
# with more time. OUT remembers them (OUT/overrides.txt): a rerun must give the same ones.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
budget= out=runs/reproduce epochs= quick=0 plan_only=0 bin=$repo/build/launcher/coconut overrides=()
usage() { sed -n '5,6p' "$0" | sed 's/^# *//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --budget-minutes) budget=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --epochs) epochs=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --quick) quick=1; shift ;;
    --plan-only) plan_only=1; shift ;;
    --set)
      [[ ${2:-} =~ ^[a-z_]+\.[a-z0-9_.]+=.+$ ]] || { echo "reproduce.sh: --set wants KEY=VALUE, got '${2:-}'" >&2; exit 2; }
      overrides+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "reproduce.sh: unknown option '$1'" >&2; usage ;;
  esac
done
[[ -n $budget ]] || budget=$([[ $quick == 1 ]] && echo 2 || echo 120)
[[ -n $epochs ]] || epochs=$([[ $quick == 1 ]] && echo 7 || echo 10)
[[ $budget =~ ^[0-9]+([.][0-9]+)?$ && $epochs =~ ^[0-9]+$ && $epochs -ge 1 ]] || usage
[[ -x $bin ]] || { echo "reproduce.sh: no coconut binary at $bin (build it, or pass --bin)" >&2; exit 2; }
prosqa_valid=$repo/../shared/data/prosqa_valid.json
[[ -f $prosqa_valid ]] || { echo "reproduce.sh: missing $prosqa_valid" >&2; exit 2; }
mkdir -p "$out/data"
out=$(cd "$out" && pwd)
start=$(date +%s)
log() { echo "[reproduce $(date +%H:%M:%S)] $*"; }

# The --set overrides shape the calibration, the plan and every run: OUT keeps them, and a
# rerun with others would mix two settings in one table.
given=$(printf '%s\n' ${overrides[@]+"${overrides[@]}"})
if [[ -f $out/overrides.txt ]]; then
  [[ $(cat "$out/overrides.txt") == "$given" ]] || {
    echo "reproduce.sh: $out was started with --set overrides [$(paste -sd' ' "$out/overrides.txt")]" \
      "and this invocation gives [$(paste -sd' ' <<<"$given")]: give the same ones, or use another --out" >&2
    exit 2
  }
else
  printf '%s' "$given" >"$out/overrides.txt"
fi

# Sizes: the paper's, or a few dozen items for --quick.
if [[ $quick == 1 ]]; then
  n_prosqa=48 n_prontoqa=48 n_test=8 calib=16 eval_items=8 probe_items=4 reserve_s=15 min_items=16
  model=(--set model.n_layer=1 --set model.d_model=32 --set eval.max_new_tokens=40 --set train.batch_size=16)
else
  n_prosqa=17886 n_prontoqa=9000 n_test=800 calib=256 eval_items=0 probe_items=100 reserve_s=90 min_items=32
  model=()
fi
for o in ${overrides[@]+"${overrides[@]}"}; do model+=(--set "$o"); done
common=(--set run.threads=0 --set eval.every_epochs=0 --set eval.max_items=$eval_items "${model[@]}")

# ---- 1. data ------------------------------------------------------------------------------
gen() {  # gen KIND COUNT SEED FILE
  [[ -f $4 ]] || "$bin" data generate "$1" --count "$2" --seed "$3" --out "$4" >/dev/null
}
data=$out/data
mkdir -p "$out/calibration"
gen prosqa "$n_prosqa" 1 "$data/prosqa_train_full.json"
gen prontoqa "$n_prontoqa" 1 "$data/prontoqa_train_full.json"
gen prontoqa "$n_test" 2 "$data/prontoqa_test.json"
gen prosqa "$calib" 1 "$data/prosqa_calib.json"      # generated item i depends only on (seed, i):
gen prontoqa "$calib" 1 "$data/prontoqa_calib.json"  # these are the full files' first items
log "data: ProsQA $n_prosqa + $(basename "$prosqa_valid"), ProntoQA $n_prontoqa + $n_test test items in $data"

# ---- 2. calibration -----------------------------------------------------------------------
calibrate() {  # calibrate DATASET METHOD VALID: writes OUT/calibration/DATASET-METHOD.json
  local dir=$out/calibration/$1-$2
  [[ -f $dir.json ]] && return
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" train "$repo/configs/reproduce_$1.yaml" --set run.dir="$dir" --set data.train_file="$data/$1_calib.json" \
    --set data.valid_file="$3" --set curriculum.method="$2" --set train.epochs=1 "${common[@]}" \
    --set eval.max_items=32 >"$dir.log" 2>&1 || { echo "calibration $1 $2 failed: see $dir.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 - "$dir" "$t0" "$t1" "$calib" >"$dir.json" <<'PY'
import json, sys
d, t0, t1, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
row = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if "kind" not in json.loads(l)][-1]
ev = json.load(open(f"{d}/eval_valid.json"))
# Everything but the training epoch (start-up, evaluation, export) counts as evaluation cost.
print(json.dumps({"train_s_per_item": row["seconds"] / n, "eval_s_per_item": (t1 - t0 - row["seconds"]) / ev["total"]}))
PY
}
calibrate prosqa cot "$prosqa_valid"
calibrate prosqa no_curriculum "$prosqa_valid"
calibrate prontoqa cot "$data/prontoqa_test.json"
calibrate prontoqa no_curriculum "$data/prontoqa_test.json"

# ---- 3. plan --------------------------------------------------------------------------------
plan=$out/plan.json
if [[ ! -f $plan ]]; then
  used=$(( $(date +%s) - start ))
  n_valid=$(python3 -c "import json, sys; print(len(json.load(open(sys.argv[1]))))" "$prosqa_valid")
  python3 "$repo/tools/reproduce_plan.py" "$out" "$budget" "$used" "$epochs" "$n_prosqa" "$n_prontoqa" "$n_valid" \
    "$n_test" "$eval_items" "$reserve_s" "$min_items" >"$plan.tmp" || { rm -f "$plan.tmp"; exit 1; }
  mv "$plan.tmp" "$plan"
fi
read -r n_train_prosqa n_train_prontoqa eps <<<"$(python3 -c "
import json, sys; p = json.load(open(sys.argv[1]))
print(p['datasets']['prosqa']['train_items'], p['datasets']['prontoqa']['train_items'], p['epochs_per_stage'])" "$plan")"
epochs=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['epochs'])" "$plan")
# The training files carry their size: a new plan (OUT/plan.json deleted) gets new files.
gen prosqa "$n_train_prosqa" 1 "$data/prosqa_train_$n_train_prosqa.json"
gen prontoqa "$n_train_prontoqa" 1 "$data/prontoqa_train_$n_train_prontoqa.json"
log "plan ($plan): $epochs epochs ($eps per curriculum stage) on the first $n_train_prosqa of $n_prosqa ProsQA and $n_train_prontoqa of $n_prontoqa ProntoQA items"
[[ $plan_only == 0 ]] || exit 0

# ---- 4. the sweeps --------------------------------------------------------------------------
# The time cap of a sweep's runs (the same for all of them: tools/reproduce_plan.py).
cap() { python3 -c "
import json, sys; p = json.load(open(sys.argv[1]))
print(next(r['max_minutes'] for d in p['datasets'].values() for r in d['runs'] if r['sweep'] == sys.argv[2]))" "$plan" "$1"; }
sweep() {  # sweep NAME DATASET TRAIN_ITEMS VALID_FILE
  log "sweep $1 ($(cap "$1") min cap per run): log $out/$1.log"
  "$bin" sweep "$repo/configs/sweeps/reproduce_$1.yaml" --out "$out/$1" "${common[@]}" \
    --set data.train_file="$data/$2_train_$3.json" --set data.valid_file="$4" --set train.epochs="$epochs" \
    --set curriculum.epochs_per_stage="$eps" --set train.max_minutes="$(cap "$1")" >>"$out/$1.log" 2>&1 ||
    log "sweep $1: some runs failed (see $out/$1.log); continuing"
}
sweep prosqa_c prosqa "$n_train_prosqa" "$prosqa_valid"
sweep prosqa_methods prosqa "$n_train_prosqa" "$prosqa_valid"
sweep prontoqa prontoqa "$n_train_prontoqa" "$data/prontoqa_test.json"

# ---- 5. probe ------------------------------------------------------------------------------
coconut_run=$out/prosqa_c/c_thought-1
if [[ -f $coconut_run/model/model.safetensors && ! -f $out/probe_frontier.png ]]; then
  "$bin" probe "$coconut_run" --data "$prosqa_valid" --items "$probe_items" --thoughts 6 \
    --out "$out/probe_prosqa_valid.json" --plot "$out/probe_frontier.png" >"$out/probe.txt" 2>&1 ||
    log "probe failed: see $out/probe.txt"
fi
if [[ -f $out/prosqa_c/accuracy_vs_c.png ]]; then cp "$out/prosqa_c/accuracy_vs_c.png" "$out/accuracy_vs_c.png"; fi

# ---- 6. the results table -----------------------------------------------------------------
python3 "$repo/tools/reproduce_table.py" "$out" "$(( $(date +%s) - start ))" >"$out/results.md"
log "results: $out/results.md (plots: $out/accuracy_vs_c.png, $out/probe_frontier.png)"
cat "$out/results.md"
