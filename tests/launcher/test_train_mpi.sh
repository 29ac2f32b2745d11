#!/usr/bin/env bash
# `coconut train` as one process and as MPI jobs (pipeline stages, pipeline x data
# parallel, each schedule) through three curriculum stages with latent passes and
# dropout: every epoch's loss must equal the one-process run within 1e-5 relative, and
# the same topology twice must give identical bits.
# usage: test_train_mpi.sh COCONUT_BINARY CONFIG_DIR TMP_DIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bin=$1 configs=$2 tmp=$3/train_mpi
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
args=("$configs/prosqa_tiny.yaml" --set train.epochs=3 --set curriculum.epochs_per_stage=1
      --set data.generate_train=48 --set data.generate_valid=4 --set train.batch_size=16
      --set train.micro_batch_size=4 --set model.dropout=0.1 --set eval.every_epochs=0 --set run.threads=1)

train_run single 1
train_run pp2_ring 2 --set parallel.pp=2 --set parallel.schedule=ring
train_run pp2_ring_again 2 --set parallel.pp=2 --set parallel.schedule=ring
train_run pp2_gpipe 2 --set parallel.pp=2 --set parallel.schedule=gpipe
train_run dp2 2 --set parallel.pp=1
train_run pp2_dp2_1f1b 4 --set parallel.pp=2 --set parallel.schedule=1f1b
# train.micro_batch_size left to its default (0): batch 16 cut for the topology, logged.
train_run dp2_default 2 --set parallel.pp=1 --set train.micro_batch_size=0
# Evaluation under mpirun: 4 ranks share 7 batches of 3 items; `coconut eval` of the
# saved model in one process must give the same items bit for bit, with every thought's
# two most probable tokens (eval.thought_tokens, carried between the ranks).
train_run pp2_dp2_eval 4 --set parallel.pp=2 --set data.generate_valid=20 --set eval.batch_size=3 --set eval.every_epochs=1 \
  --set eval.thought_tokens=2
"$bin" eval "$tmp/pp2_dp2_eval" --out "$tmp/pp2_dp2_eval/eval_one_process.json" > "$tmp/pp2_dp2_eval_eval.log" 2>&1 ||
  { echo "FAIL: coconut eval of pp2_dp2_eval"; cat "$tmp/pp2_dp2_eval_eval.log"; exit 1; }
python3 - "$tmp/pp2_dp2_eval" <<'PY' || { echo "FAIL: the 4-rank evaluation differs from one process"; exit 1; }
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/{f}")) for f in ("eval_valid.json", "eval_one_process.json"))
assert a["total"] == b["total"] == 20 and a["items"] == b["items"] and a["correct"] == b["correct"], (a, b)
assert all(len(i["thought_tokens"]) == i["thoughts"] and all(len(t) == 2 for t in i["thought_tokens"])
           for i in a["items"]), "eval.thought_tokens: thoughts without their tokens"
assert sum(i["thoughts"] for i in a["items"]) > 0, "no thoughts to compare"
print(f"4-rank evaluation = one process: {a['total']} items, {a['correct']} correct, "
      f"{a['mean_generated_tokens']:.2f} generated tokens per item")
PY
# The learned <eot> classifier: its loss joins the model's on the last stage, its
# gradient and statistics are summed over the ranks.
eot=(--set curriculum.eot_classifier=true)
train_run single_eot 1 "${eot[@]}"
train_run pp2_dp2_eot 4 "${eot[@]}" --set parallel.pp=2 --set parallel.schedule=ring
train_run pp2_default 2 --set parallel.pp=2 --set train.micro_batch_size=0
for case in "dp2_default 8" "pp2_default 4"; do
  set -- $case
  grep -q "micro-batches of $2 (train.micro_batch_size's default for this topology)" "$tmp/$1.log" ||
    { echo "FAIL: $1 should log micro-batches of $2 (the default)"; grep "parallel:" "$tmp/$1.log"; exit 1; }
  ! grep -q "some replicas will be idle" "$tmp/$1.log" || { echo "FAIL: $1 warns of idle replicas"; exit 1; }
done

python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
def losses(name):
    return [json.loads(l)["loss"] for l in open(f"{tmp}/{name}/metrics.jsonl")]
ref = losses("single")
assert len(ref) == 3, ref
ok = True
for name in ["pp2_ring", "pp2_gpipe", "dp2", "pp2_dp2_1f1b", "dp2_default", "pp2_default"]:
    got = losses(name)
    worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
    print(f"{name}: losses {got} worst relative difference {worst:.2e}")
    ok &= len(got) == len(ref) and worst <= 1e-5
# Every distributed epoch reports a measured and a simulated bubble per rank, in [0, 1),
# and the peak activation MiB per rank: measured (every activation buffer allocated)
# above the simulator's per-micro-batch figure, which leaves out workspace and scratch.
for line in open(f"{tmp}/pp2_dp2_1f1b/metrics.jsonl"):
    row = json.loads(line)
    for key in ("bubble_measured", "bubble_simulated"):
        vals = row.get(key, [])
        print(key, vals)
        ok &= len(vals) == 4 and all(0.0 <= v < 1.0 for v in vals)
    measured, simulated = row.get("activation_mib_measured", []), row.get("activation_mib_simulated", [])
    print("activation MiB measured", measured, "simulated", simulated)
    ok &= len(measured) == 4 and len(simulated) == 4 and all(0 < s < m for m, s in zip(measured, simulated))
single = [json.loads(l).get("activation_mib_measured", 0) for l in open(f"{tmp}/single/metrics.jsonl")]
print("one process, activation MiB measured", single)
ok &= all(v > 0 for v in single)
# With the <eot> classifier: losses, the classifier's statistics and its saved weights
# equal the one-process run's within 1e-5 relative (1e-6 absolute for the weights).
got, ref_eot = losses("pp2_dp2_eot"), losses("single_eot")
worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref_eot))
print(f"pp2_dp2_eot: losses {got} worst relative difference {worst:.2e}")
ok &= len(got) == len(ref_eot) == 3 and worst <= 1e-5 and ref_eot != ref
def eot_stats(name):
    return [(r["eot_bce"], r["eot_stop_accuracy"]) for r in map(json.loads, open(f"{tmp}/{name}/metrics.jsonl"))]
for (bce, acc), (bce1, acc1) in zip(eot_stats("pp2_dp2_eot"), eot_stats("single_eot")):
    print(f"eot bce {bce:.6f} vs {bce1:.6f}, stop accuracy {acc:.4f} vs {acc1:.4f}")
    ok &= abs(bce - bce1) <= 1e-5 * abs(bce1) and abs(acc - acc1) <= 1e-9
def weights(name):
    lines = open(f"{tmp}/{name}/eot_classifier.txt").read().split("\n")[2:]
    return [float.fromhex(v) for v in lines if v]
w, w1 = weights("pp2_dp2_eot"), weights("single_eot")
print(f"eot classifier: {len(w)} values, largest difference {max(abs(a - b) for a, b in zip(w, w1)):.2e}")
ok &= len(w) == len(w1) > 0 and max(abs(a - b) for a, b in zip(w, w1)) <= 1e-6 and any(v != 0 for v in w)
# ZeRO-1: the ranks' AdamW moments partition the parameters (each held once), and one
# process holds them all. A rank that also kept a whole-model optimizer would add n.
import re
def moments(name):
    text = open(f"{tmp}/{name}.log").read()
    one = re.search(r"optimizer: AdamW moments of (\d+) of the (\d+) parameters", text)
    if one:
        return int(one.group(2)), [int(one.group(1))]
    many = re.search(r"optimizer: AdamW moments held per rank, of (\d+) parameters:(.*)", text)
    return int(many.group(1)), [int(c) for c in re.findall(r"rank \d+: (\d+) \(", many.group(2))]
for name, ranks in [("single", 1), ("pp2_ring", 2), ("dp2", 2), ("pp2_dp2_1f1b", 4)]:
    n, held = moments(name)
    print(f"{name}: AdamW moments per rank {held} of {n} parameters")
    ok &= len(held) == ranks and sum(held) == n and (ranks == 1 or max(held) < n)
# Pipeline stages hold only their slices of the model (parallel/partition.h
# held_param_slices): the measured resident memory of each rank's parameter and
# gradient buffers stays within its held count (a page or so at the slices' ends), a
# stage holds well under the whole model, and one process holds all of it. A rank that
# initialised, loaded or gathered the whole model would show all of it resident.
def param_memory(name):
    text = open(f"{tmp}/{name}.log").read()
    m = re.search(r"parameters held per rank, of (\d+) \(([\d.]+) MiB\), with the resident memory of their buffers:(.*)", text)
    rows = re.findall(r"rank \d+: (\d+) \(params ([\d.]+) MiB, grads ([\d.]+) MiB\)", m.group(3))
    return int(m.group(1)), [(int(h), float(p), float(g)) for h, p, g in rows]
for name, ranks, pp in [("single", 1, 1), ("pp2_ring", 2, 2), ("dp2", 2, 1), ("pp2_dp2_1f1b", 4, 2), ("pp2_dp2_eval", 4, 2)]:
    n, rows = param_memory(name)
    print(f"{name}: parameters held per rank (held, params MiB, grads MiB) {rows} of {n}")
    full = n * 4 / 2**20
    ok &= len(rows) == ranks
    for held, params, grads in rows:
        bound = held * 4 / 2**20 + 4 * 4096 / 2**20 + 0.001
        ok &= params <= bound and grads <= bound
        ok &= (held == n and params >= full - 0.01) if pp == 1 else (held < 0.8 * n and params < 0.8 * full)
same = losses("pp2_ring") == losses("pp2_ring_again")
print("pp2_ring twice identical:", same)
sys.exit(0 if ok and same else 1)
PY
# A grid that does not fit the job is one clear error, and no rank hangs.
if mpirun --oversubscribe -np 3 "$bin" train "${args[@]}" --set run.dir="$tmp/bad" --set parallel.pp=2 > "$tmp/bad.log" 2>&1; then
  echo "FAIL: pp=2 on 3 ranks should fail"; exit 1
fi
grep -q "pp" "$tmp/bad.log" || { echo "FAIL: no message about the grid"; cat "$tmp/bad.log"; exit 1; }
echo "train under mpirun: all checks passed"
