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
