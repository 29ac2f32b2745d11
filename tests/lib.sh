# Helpers shared by the shell tests (sourced, never run on its own):
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# A test that fails says why on stderr and exits 1; CTest shows both streams.

# fail MESSAGE: the test fails.
fail() { echo "FAIL: $*" >&2; exit 1; }
# pass MESSAGE: one check passed.
pass() { echo "ok: $*"; }

# expect CODE PATTERN CMD...: CMD exits with CODE and its stderr matches PATTERN (grep).
# Its output stays in $work/out.txt and $work/err.txt ($work: the caller's scratch folder).
expect() {
  local code=$1 pattern=$2 rc=0
  shift 2
  "$@" >"$work/out.txt" 2>"$work/err.txt" || rc=$?
  [[ $rc == "$code" ]] || fail "'$*' exited $rc, expected $code; stderr: $(cat "$work/err.txt")"
  grep -q -- "$pattern" "$work/err.txt" || fail "'$*': stderr lacks '$pattern': $(cat "$work/err.txt")"
}

# train_run NAME NP [OPTIONS...]: `coconut train` with the caller's $bin and "${args[@]}",
# run.dir $tmp/NAME, as one process (NP 1) or NP ranks under mpirun; its output is
# appended to $tmp/NAME.log (a resumed run continues it). Fails the test, with the log's
# tail, when it exits non-zero.
train_run() {
  local name=$1 np=$2
  shift 2
  if [ "$np" = 1 ]; then "$bin" train "${args[@]}" --set run.dir="$tmp/$name" "$@" >>"$tmp/$name.log" 2>&1
  else mpirun --oversubscribe -np "$np" "$bin" train "${args[@]}" --set run.dir="$tmp/$name" "$@" >>"$tmp/$name.log" 2>&1
  fi || fail "run $name ($*) exited non-zero: $(tail -n 20 "$tmp/$name.log")"
}

# skip_without_gpu: a GPU test without a GPU (nvidia-smi finds none) prints "no CUDA
# device, skipping" (CTest: skipped) and exits 0, unless COCONUT_REQUIRE_GPU=1
# (tests/gpu/run.sh), where that is a failure.
skip_without_gpu() {
  nvidia-smi >/dev/null 2>&1 && return 0
  [[ ${COCONUT_REQUIRE_GPU:-0} == 1 ]] && fail "COCONUT_REQUIRE_GPU=1 but nvidia-smi finds no GPU"
  echo "no CUDA device, skipping"
  exit 0
}

# graph_replays LOG N: LOG has N lines "CUDA graphs: C captured, R replays" (each rank
# logs one at the end of training, into RUN_DIR/logs/train.rank<r>.log; rank 0's also on
# the console) and every R is positive: the graphs were replayed, not only turned on.
# Prints the lines; fails otherwise.
graph_replays() {
  local lines
  lines=$(grep -Eo "CUDA graphs: [0-9]+ captured, [0-9]+ replays" "$1" || true)
  echo "$lines"
  [[ $(grep -c . <<<"$lines") == "$2" ]] || fail "$1: expected $2 line(s) 'CUDA graphs: C captured, R replays'"
  ! grep -q " 0 replays" <<<"$lines" || fail "$1: a rank never replayed a CUDA graph"
}

# step_losses STEPS_JSONL: every step's loss, exactly (repr), on one line.
step_losses() { python3 -c "import json,sys; print(' '.join(repr(json.loads(l)['loss']) for l in open(sys.argv[1])))" "$1"; }

# steps_close A B FIRST_TOL ALL_TOL: two steps.jsonl of more than 8 equal-length steps
# whose losses differ relatively by at most FIRST_TOL at the first step and ALL_TOL at
# every step; prints both worst differences. Exits non-zero otherwise.
steps_close() {
  python3 - "$@" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
first_tol, all_tol = float(sys.argv[3]), float(sys.argv[4])
assert len(a) == len(b) > 8, (len(a), len(b))
rel = [abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a, b)]
print(f"{sys.argv[1]} vs {sys.argv[2]}: first step {rel[0]:.2e}, worst of {len(rel)} steps {max(rel):.2e}")
assert rel[0] <= first_tol and max(rel) <= all_tol
PY
}

# wait_lines FILE N WHAT: waits until FILE has at least N lines (a run's steps.jsonl, say);
# after 60 s the test fails, naming WHAT.
wait_lines() {
  for _ in $(seq 600); do
    [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "$3 wrote no $2 lines to $1 in 60 s"
}

# wait_log FILE TEXT WHAT: waits until FILE holds a line with TEXT (fixed string); after
# 60 s the test fails, naming WHAT.
wait_log() {
  for _ in $(seq 600); do
    [ -f "$1" ] && grep -qF -- "$2" "$1" && return 0
    sleep 0.1
  done
  fail "$3 logged no '$2' to $1 in 60 s"
}
