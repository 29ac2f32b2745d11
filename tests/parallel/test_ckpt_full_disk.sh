#!/usr/bin/env bash
# A checkpoint save on a full disk under mpirun -np 2: it fails on every rank with a
# message naming the file, leaves no committed or temporary directory, and the older
# checkpoint stays `latest` and intact. The disk is a 4 MiB tmpfs when this container may
# mount one (we run as root); otherwise a 2 MiB file-size limit (RLIMIT_FSIZE, as
# `ulimit -f` sets, with SIGXFSZ ignored so that write() fails with EFBIG) stands in for
# it, set by the driver itself after MPI_Init (MPI's shared-memory files are larger).
# usage: test_ckpt_full_disk.sh CKPT_DRIVER TMP_DIR
set -uo pipefail
driver=$1 tmp=$2/ckpt_full_disk
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect
umount "$tmp/disk" 2> /dev/null
rm -rf "$tmp" && mkdir -p "$tmp/disk"
# CKPT_TEST_NO_MOUNT=1 tries the fallback on a machine that could mount.
if [ -z "${CKPT_TEST_NO_MOUNT:-}" ] && mount -t tmpfs -o size=4m tmpfs "$tmp/disk" 2> /dev/null; then
  mode=tmpfs expect="No space left on device"
  trap 'umount "$tmp/disk"' EXIT
else
  mode=ulimit expect="File too large"
fi
echo "full disk by: $mode"
root=$tmp/disk/ckpt
run() {  # the save or check command; under `ulimit` the driver limits its own file size
  if [ $mode = ulimit ]; then CKPT_DRIVER_FSIZE_LIMIT=2097152 mpirun --oversubscribe -np 2 -x CKPT_DRIVER_FSIZE_LIMIT "$driver" "$@"
  else mpirun --oversubscribe -np 2 "$driver" "$@"; fi
}
# 2 x 100k floats = 0.8 MB: fits. Then 2 x 1M floats = 8 MB: does not.
run save "$root" 1 100000 > "$tmp/log" 2>&1 || fail "the small save failed: $(cat "$tmp/log")"
run save "$root" 2 1000000 > "$tmp/full.log" 2>&1
rc=$?
cat "$tmp/full.log"
[ $rc -ne 0 ] || fail "the save on a full disk reported success"
for r in 0 1; do
  grep -q "rank $r: save failed: checkpoint save failed on" "$tmp/full.log" || fail "rank $r did not report the failure"
done
grep -q "$expect" "$tmp/full.log" || fail "the message does not give the reason ($expect)"
grep -q "$root/step-00000002.tmp-[0-9a-f]*/shard-0000[01].bin" "$tmp/full.log" || fail "the message does not name the file"
echo "left on disk: $(ls "$root" | tr '\n' ' ')"
[ ! -e "$root/step-00000002" ] || fail "a committed step 2 exists after the failed save"
if ls "$root" | grep -q '\.tmp-'; then fail "the failed save left its temporary directory"; fi
[ "$(cat "$root/latest")" = "step-00000001" ] || fail "latest moved"
run check "$root" 1 100000 >> "$tmp/log" 2>&1 || fail "step 1 does not read back: $(tail -5 "$tmp/log")"
# The space came back: a save that fits succeeds.
run save "$root" 2 100000 >> "$tmp/log" 2>&1 || fail "a fitting save after the failure failed: $(tail -5 "$tmp/log")"
run check "$root" 2 100000 >> "$tmp/log" 2>&1 || fail "step 2 does not read back"
echo "full disk: the save failed cleanly on every rank ($mode)"
