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
