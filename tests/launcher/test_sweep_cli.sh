#!/usr/bin/env bash
# `coconut sweep` end to end on configs/sweeps/tiny.yaml (2 runs of a few seconds):
#  1. both runs train; results.csv / results.md hold each run's accuracy (equal to its
#     eval_valid.json), generated tokens and wall time; the plot is a PNG;
#  2. a second sweep skips both (the log says so, no file of either run changes);
#  3. without its finished marker (an interrupted run) one run is started again with
#     `--resume auto` while the other stays skipped;
#  4. a bad sweep file or grid key exits 2 and writes nothing; --dry-run writes nothing;
#  5. with --np 2 every run is its own `mpirun -np 2` job (2 pipeline stages);
#  6. two tasks of a sharded sweep (--shard 0/2 and 1/2) at once train each run once, and
#     --report writes the table and the plot from the run directories.
#   test_sweep_cli.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$2
mkdir -p "$3"
work=$(mktemp -d "$3/sweep.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

sweep=$configs/sweeps/tiny.yaml
out=$work/out
runs=(c_thought-0 c_thought-1)

# ---- 4 first: nothing may be written by a dry run or a bad sweep -------------------------
"$bin" sweep "$sweep" --out "$out" --dry-run >"$work/dry.txt" || fail "dry run: $(cat "$work/dry.txt")"
for r in "${runs[@]}"; do grep -q "^$r: train: .*prosqa_tiny.yaml --set" "$work/dry.txt" ||
  fail "dry run does not plan $r: $(cat "$work/dry.txt")"; done
[[ ! -e $out ]] || fail "the dry run wrote $out"

{ cat "$sweep"; echo "outdir: elsewhere"; } >"$work/unknown.yaml"
rc=0; "$bin" sweep "$work/unknown.yaml" --out "$out" 2>"$work/err.txt" >/dev/null || rc=$?
[[ $rc == 2 ]] && grep -q "unknown.yaml:[0-9]*: unknown key 'outdir'" "$work/err.txt" ||
  fail "unknown sweep key: exit $rc: $(cat "$work/err.txt")"
# The sweep file lives in $work, so its base config must be absolute.
sed "s|^base: .*|base: $configs/prosqa_tiny.yaml|; s/curriculum.c_thought$/curriculum.c_thougt/" "$sweep" >"$work/typo.yaml"
grep -q "c_thougt" "$work/typo.yaml" || fail "could not make the grid-key typo"
rc=0; "$bin" sweep "$work/typo.yaml" --out "$out" 2>"$work/err.txt" >/dev/null || rc=$?
[[ $rc == 2 ]] && grep -q "c_thougt-0: .*unknown key 'curriculum.c_thougt'" "$work/err.txt" ||
  fail "grid-key typo: exit $rc: $(cat "$work/err.txt")"
[[ ! -e $out ]] || fail "a rejected sweep wrote $out"
# The dry run measures each run's sequences as the run would at its start: with 340
# positions c = 0 fits (326 columns) and c = 40 does not (40 thoughts for the first step).
sed "s|^base: .*|base: $configs/prosqa_tiny.yaml|; s/values: \[0, 1\]/values: [0, 40]/;
     s/  - run.threads=1/  - run.threads=1\n  - model.max_positions=340/" "$sweep" >"$work/long.yaml"
rc=0; "$bin" sweep "$work/long.yaml" --out "$out" --dry-run >"$work/dry.txt" 2>"$work/err.txt" || rc=$?
[[ $rc == 2 ]] && grep -q "^problem: c_thought-40: the training data does not fit model.max_positions 340" "$work/err.txt" &&
  ! grep -q "c_thought-0" "$work/err.txt" && grep -q "^c_thought-0: sequence lengths: .* has 326 columns" "$work/dry.txt" ||
  fail "dry run of a sweep with a run too long: exit $rc: $(cat "$work/dry.txt" "$work/err.txt")"
[[ ! -e $out ]] || fail "a rejected sweep wrote $out"
pass "dry run and bad sweep files write nothing (exit 2); the dry run names the run whose sequences do not fit"

# ---- 1. the sweep trains both runs -------------------------------------------------------
"$bin" sweep "$sweep" --out "$out" >"$work/first.txt" 2>&1 || fail "first sweep: $(cat "$work/first.txt")"
for r in "${runs[@]}"; do
  grep -q "\] $r: training" "$work/first.txt" || fail "first sweep did not train $r: $(cat "$work/first.txt")"
  for f in sweep_done.json train.log eval_valid.json model/model.safetensors; do
    [[ -f $out/$r/$f ]] || fail "$r lacks $f"
  done
  grep -q -- "--set curriculum.c_thought=${r#c_thought-} --set run.dir=$out/$r" "$out/$r/train.log" ||
    fail "$r: train.log does not show its command: $(head -n 3 "$out/$r/train.log")"
done
python3 - "$out" "${runs[@]}" <<'PY'
import csv, json, sys
out, names = sys.argv[1], sys.argv[2:]
rows = list(csv.DictReader(open(f"{out}/results.csv")))
assert [r["run"] for r in rows] == names, rows
for r, c in zip(rows, ["0", "1"]):
    assert r["curriculum.c_thought"] == c, r
    assert r["status"] == "trained", r
    ev = json.load(open(f"{out}/{r['run']}/eval_valid.json"))
    assert abs(float(r["valid_accuracy"]) - ev["accuracy"]) < 1e-6, (r, ev["accuracy"])
    assert abs(float(r["mean_generated_tokens"]) - ev["mean_generated_tokens"]) < 1e-4, r
    assert float(r["wall_seconds"]) > 0, r
md = open(f"{out}/results.md").read()
for n in names:
    assert f"| {n} |" in md, md
print("results table:", [(r["run"], r["valid_accuracy"], r["wall_seconds"]) for r in rows])
PY
if [[ -f $out/accuracy_vs_c.png ]]; then
  head -c 8 "$out/accuracy_vs_c.png" | od -An -tx1 | grep -q "89 50 4e 47 0d 0a 1a 0a" || fail "accuracy_vs_c.png is not a PNG"
else
  fail "no accuracy_vs_c.png"
fi
pass "first sweep trained both runs and wrote the table and the plot"

# ---- 2. a second sweep skips both --------------------------------------------------------
snapshot() { find "$out"/c_thought-* -type f -printf '%p %T@ %s\n' | sort; }
snapshot >"$work/before.txt"
sleep 1  # so that a rewritten file would get a different mtime
"$bin" sweep "$sweep" --out "$out" >"$work/second.txt" 2>&1 || fail "second sweep: $(cat "$work/second.txt")"
for r in "${runs[@]}"; do
  grep -q "\] $r: skipped, already finished" "$work/second.txt" || fail "second sweep did not skip $r: $(cat "$work/second.txt")"
done
! grep -q "training\|resuming" "$work/second.txt" || fail "second sweep started a run: $(cat "$work/second.txt")"
snapshot >"$work/after.txt"
diff "$work/before.txt" "$work/after.txt" >/dev/null || fail "the skipped runs' files changed: $(diff "$work/before.txt" "$work/after.txt")"
python3 - "$out" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/results.csv")))
assert [r["status"] for r in rows] == ["skipped", "skipped"], rows
assert all(r["valid_accuracy"] != "" and float(r["wall_seconds"]) > 0 for r in rows), rows
PY
pass "second sweep skipped both runs, their files untouched"

# ---- 3. an interrupted run is resumed ----------------------------------------------------
rm "$out/c_thought-1/sweep_done.json"
rc=0
"$bin" sweep "$sweep" --out "$out" >"$work/third.txt" 2>&1 || rc=$?
grep -q "\] c_thought-0: skipped" "$work/third.txt" || fail "third sweep did not skip c_thought-0: $(cat "$work/third.txt")"
grep -q "\] c_thought-1: interrupted earlier, resuming with --resume auto" "$work/third.txt" ||
  fail "third sweep did not resume c_thought-1: $(cat "$work/third.txt")"
[[ $(grep -c "^# coconut sweep .* --resume auto$" "$out/c_thought-1/train.log") == 1 ]] ||
  fail "train.log of c_thought-1 lacks the resumed command: $(grep '^# coconut sweep' "$out/c_thought-1/train.log")"
[[ $rc == 0 ]] || fail "the resumed run failed (exit $rc): $(tail -n 20 "$out/c_thought-1/train.log")"
# The tiny sweep saves a checkpoint at every epoch end: the restart continues from the
# last one instead of training again.
sed -n '/^# coconut sweep .* --resume auto$/,$p' "$out/c_thought-1/train.log" >"$work/resumed.log"
grep -q "resumed from .*checkpoints" "$work/resumed.log" || fail "the restart did not resume a checkpoint: $(cat "$work/resumed.log")"
[[ -f $out/c_thought-1/sweep_done.json ]] || fail "the resumed run has no marker"
grep -q '"resumed": true' "$out/c_thought-1/sweep_done.json" || fail "the marker does not say resumed"
python3 - "$out" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/results.csv")))
assert [r["status"] for r in rows] == ["skipped", "resumed"], rows
# Its wall time is both attempts' (sweep_attempts.jsonl: start, end, start, end).
attempts = [json.loads(l) for l in open(f"{sys.argv[1]}/c_thought-1/sweep_attempts.jsonl")]
assert [sorted(a) for a in attempts] == [["start"], ["end", "exit", "seconds"]] * 2, attempts
total = sum(a["seconds"] for a in attempts if "seconds" in a)
assert abs(float(rows[1]["wall_seconds"]) - total) < 0.01 and total > attempts[3]["seconds"], (rows[1], attempts)
PY
pass "interrupted run resumed with --resume auto, the finished one skipped"
# ---- each run its own mpirun job ----------------------------------------------------------
"$bin" sweep "$sweep" --out "$work/mpi" --np 2 --set parallel.pp=2 >"$work/mpi.txt" 2>&1 ||
  fail "sweep under mpirun: $(cat "$work/mpi.txt") $(tail -n 20 "$work"/mpi/*/train.log)"
for r in "${runs[@]}"; do
  grep -q "^# coconut sweep .*: mpirun -np 2 --oversubscribe .* train " "$work/mpi/$r/train.log" ||
    fail "$r was not started by mpirun: $(head -n 1 "$work/mpi/$r/train.log")"
  grep -q "parallel: 2 ranks = 2 pipeline stages x 1 replicas" "$work/mpi/$r/train.log" ||
    fail "$r did not run on 2 pipeline ranks: $(cat "$work/mpi/$r/train.log")"
  [[ -f $work/mpi/$r/sweep_done.json ]] || fail "$r (mpirun) has no marker"
done
pass "each run is its own mpirun -np 2 job"

# ---- 6. two tasks at once (--shard I/N, a job array), then --report ----------------------
"$bin" sweep "$sweep" --out "$work/shard" --shard 0/2 >"$work/shard0.txt" 2>&1 &
task0=$!
"$bin" sweep "$sweep" --out "$work/shard" --shard 1/2 >"$work/shard1.txt" 2>&1 || fail "task 1: $(cat "$work/shard1.txt")"
wait "$task0" || fail "task 0: $(cat "$work/shard0.txt")"
for k in 0 1; do
  other=$((1 - k))
  grep -q "task $k of 2: runs $k modulo 2" "$work/shard$k.txt" || fail "task $k header: $(cat "$work/shard$k.txt")"
  grep -q "\] ${runs[$k]}: training" "$work/shard$k.txt" || fail "task $k did not train ${runs[$k]}"
  ! grep -q "${runs[$other]}: " "$work/shard$k.txt" || fail "task $k touched ${runs[$other]}: $(cat "$work/shard$k.txt")"
  grep -q -- "--report" "$work/shard$k.txt" || fail "task $k does not point at --report"
done
[[ ! -e $work/shard/accuracy_vs_c.png ]] || fail "a task wrote the plot (only --report does)"
"$bin" sweep "$sweep" --out "$work/shard" --report >"$work/report.txt" 2>&1 || fail "--report: $(cat "$work/report.txt")"
grep -q "2 runs: 2 finished or diverged, 0 interrupted (or still running), 0 not started" "$work/report.txt" ||
  fail "--report counts: $(cat "$work/report.txt")"
[[ $(head -c 8 "$work/shard/accuracy_vs_c.png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] ||
  fail "--report wrote no plot"
python3 - "$work/shard" "$out" "${runs[@]}" <<'PY'
import csv, json, sys
shard, first, names = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = list(csv.DictReader(open(f"{shard}/results.csv")))
assert [r["run"] for r in rows] == names and [r["status"] for r in rows] == ["trained"] * 2, rows
for r, name in zip(rows, names):
    # Trained once, by one task; the same accuracy as the same run in the sequential sweep.
    attempts = [json.loads(l) for l in open(f"{shard}/{name}/sweep_attempts.jsonl")]
    assert [sorted(a) for a in attempts] == [["start"], ["end", "exit", "seconds"]], attempts
    want = json.load(open(f"{first}/{name}/eval_valid.json"))["accuracy"]
    assert float(r["valid_accuracy"]) == want, (r, want)
PY
# --report on a sweep with a run never started and one interrupted: counted, and exit 0.
rm -rf "$work/shard/${runs[1]}" && rm "$work/shard/${runs[0]}/sweep_done.json"
"$bin" sweep "$sweep" --out "$work/shard" --report >"$work/report2.txt" 2>&1 || fail "--report (2): $(cat "$work/report2.txt")"
grep -q "2 runs: 0 finished or diverged, 1 interrupted (or still running), 1 not started" "$work/report2.txt" ||
  fail "--report counts (2): $(cat "$work/report2.txt")"
python3 -c "
import csv, sys
assert [r['status'] for r in csv.DictReader(open(sys.argv[1]))] == ['interrupted', 'pending']
" "$work/shard/results.csv" || fail "--report statuses: $(cat "$work/shard/results.csv")"
expect 2 "--shard expects I/N with 0 <= I < N" "$bin" sweep "$sweep" --out "$work/shard" --shard 2/2
expect 2 "--shard expects I/N with 0 <= I < N" "$bin" sweep "$sweep" --out "$work/shard" --shard 1of2
expect 2 "--report trains nothing: not with --dry-run or --shard" "$bin" sweep "$sweep" --report --shard 0/2
pass "two --shard tasks at once train each run once; --report writes the table and the plot"

echo "all sweep checks passed"
