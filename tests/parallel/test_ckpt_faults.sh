#!/usr/bin/env bash
# Kill -9 of a rank at each fault-injection point of a checkpoint save under mpirun -np 2
# (parallel/checkpoint.h, COCONUT_CKPT_FAULT): the job dies, the previous checkpoint is
# still `latest` and reads back intact, nothing uncommitted is taken for a checkpoint,
# and a new save of the same step then succeeds.
# usage: test_ckpt_faults.sh CKPT_DRIVER TMP_DIR
set -uo pipefail
driver=$1 tmp=$2/ckpt_faults
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
n=200000
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect
mpi() { mpirun --oversubscribe -np 2 -x COCONUT_CKPT_FAULT "$@"; }

for point in mid_shard_write@1 before_manifest_rename before_latest_update; do
  root=$tmp/${point/@/_at_}
  log=$root.log
  echo "== $point"
  COCONUT_CKPT_FAULT= mpi "$driver" save "$root" 1 $n > "$log" 2>&1 || fail "first save failed: $(cat "$log")"
  if COCONUT_CKPT_FAULT=$point mpi "$driver" save "$root" 2 $n >> "$log" 2>&1; then
    fail "the job with COCONUT_CKPT_FAULT=$point did not die"
  fi
  grep -q "COCONUT_CKPT_FAULT: killing rank" "$log" || fail "no fault was injected at $point: $(cat "$log")"
  echo "after the kill: $(ls "$root" | tr '\n' ' ')"
  [ "$(cat "$root/latest")" = "step-00000001" ] || fail "latest is '$(cat "$root/latest")' after a kill at $point"
  case $point in
    before_latest_update)
      # Committed, but `latest` was not yet moved: the new directory is complete.
      [ -f "$root/step-00000002/manifest.pb" ] || fail "step 2 should be committed at $point" ;;
    *)
      [ ! -e "$root/step-00000002" ] || fail "step 2 must not be committed after a kill at $point"
      ls -d "$root"/step-00000002.tmp-* > /dev/null 2>&1 || fail "expected the killed save's temporary directory" ;;
  esac
  COCONUT_CKPT_FAULT= mpi "$driver" check "$root" 1 $n >> "$log" 2>&1 || fail "step 1 does not read back after $point: $(tail -5 "$log")"
  COCONUT_CKPT_FAULT= mpi "$driver" save "$root" 2 $n >> "$log" 2>&1 || fail "saving step 2 again failed: $(tail -5 "$log")"
  COCONUT_CKPT_FAULT= mpi "$driver" check "$root" 2 $n >> "$log" 2>&1 || fail "step 2 does not read back: $(tail -5 "$log")"
  if ls "$root" | grep -q '\.tmp-'; then fail "temporaries left after the next save: $(ls "$root")"; fi
  echo "ok: $point (then: $(ls "$root" | tr '\n' ' '))"
done
echo "all kill points passed"
