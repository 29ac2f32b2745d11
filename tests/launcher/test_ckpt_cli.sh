#!/usr/bin/env bash
# `coconut ckpt inspect` and `coconut ckpt export` on a checkpoint written by two ranks
# (tests/parallel/ckpt_driver save-model: a tiny GPT-2's weights, cut unevenly): inspect
# prints the manifest and exits 0, then 1 once a byte of a shard is flipped, naming the
# file; export writes the same safetensors as exporting the weights directly from memory,
# with Hugging Face GPT-2's tensor names and shapes (read by the safetensors package).
# usage: test_ckpt_cli.sh COCONUT_BINARY CKPT_DRIVER TMP_DIR
set -uo pipefail
bin=$1 driver=$2 tmp=$3/ckpt_cli
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

mpirun --oversubscribe -np 2 "$driver" save-model "$tmp/root" "$tmp/reference" > "$tmp/driver.log" 2>&1 ||
  fail "driver: $(cat "$tmp/driver.log")"
dir=$tmp/root/step-00000012

# inspect: on the root (resolves `latest`) and on the directory.
"$bin" ckpt inspect "$tmp/root" > "$tmp/inspect.txt" 2>&1 || fail "inspect exited $?: $(cat "$tmp/inspect.txt")"
cat "$tmp/inspect.txt"
for want in "checkpoint $dir" "step             12" "stage            1" "topology         2 ranks" \
            "model digest     tiny-gpt2" "shard-00001.bin" "checksums: all 2 slices ok"; do
  grep -qF "$want" "$tmp/inspect.txt" || fail "inspect output lacks '$want'"
done
grep -qE "^  params +[0-9]+ +[0-9.]+ MB +2$" "$tmp/inspect.txt" || fail "inspect does not list params with 2 slices"

# export to a directory and to a file name.
"$bin" ckpt export "$dir" --to "$tmp/hf" > /dev/null || fail "export to a directory failed"
"$bin" ckpt export "$tmp/root" --to "$tmp/file/weights.safetensors" > /dev/null || fail "export to a file failed"
cmp "$tmp/hf/model.safetensors" "$tmp/reference/model.safetensors" || fail "exported weights differ from the model's"
cmp "$tmp/file/weights.safetensors" "$tmp/reference/model.safetensors" || fail "exported file differs"
cmp "$tmp/hf/config.json" "$tmp/reference/config.json" || fail "config.json differs"
[ -f "$tmp/file/config.json" ] || fail "no config.json beside the exported file"
ls "$tmp/file" | grep -q tmp && fail "export left a temporary folder"
if python3 -c "import safetensors.numpy" 2> /dev/null; then
  # An independent reader: Hugging Face GPT-2 names and shapes (tests/model covers loading
  # such files with transformers itself).
  python3 - "$tmp/hf/model.safetensors" << 'PY' || fail "the export does not have GPT-2's tensors"
import sys
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
assert t["transformer.wte.weight"].shape == (50, 16), t["transformer.wte.weight"].shape
assert t["transformer.wpe.weight"].shape == (32, 16)
assert t["transformer.h.1.attn.c_attn.weight"].shape == (16, 48)
assert t["transformer.ln_f.bias"].shape == (16,)
assert sum(v.size for v in t.values()) == 7904, sum(v.size for v in t.values())
print("safetensors reads the export:", len(t), "tensors")
PY
fi

# usage errors exit 2.
"$bin" ckpt > /dev/null 2>&1; [ $? = 2 ] || fail "ckpt without arguments should exit 2"
"$bin" ckpt inspect > /dev/null 2>&1; [ $? = 2 ] || fail "inspect without DIR should exit 2"
"$bin" ckpt export "$dir" > /dev/null 2>&1; [ $? = 2 ] || fail "export without --to should exit 2"
"$bin" ckpt inspect "$tmp/nowhere" > /dev/null 2>&1; [ $? = 2 ] || fail "inspect of a missing path should exit 2"
"$bin" ckpt frobnicate "$dir" > /dev/null 2>&1; [ $? = 2 ] || fail "an unknown subcommand should exit 2"
"$bin" ckpt --help | grep -q "coconut ckpt export" || fail "no --help text"

# A damaged shard: inspect reports the slice and the file, exits 1; export refuses.
python3 - "$dir/shard-00001.bin" << 'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(100); b = f.read(1); f.seek(100); f.write(bytes([b[0] ^ 0x40]))
PY
"$bin" ckpt inspect "$dir" > "$tmp/bad.txt" 2>&1; rc=$?
cat "$tmp/bad.txt"
[ $rc = 1 ] || fail "inspect of a damaged checkpoint exited $rc, expected 1"
grep -q "checksums: 1 of 2 slices BAD" "$tmp/bad.txt" || fail "inspect did not count the bad slice"
grep -q "$dir/shard-00001.bin: checksum mismatch" "$tmp/bad.txt" || fail "inspect did not name the file"
"$bin" ckpt export "$dir" --to "$tmp/hf2" > "$tmp/bad_export.txt" 2>&1; rc=$?
[ $rc = 1 ] || fail "export of a damaged checkpoint exited $rc"
grep -q "shard-00001.bin: checksum mismatch" "$tmp/bad_export.txt" || fail "export error does not name the file"
# A missing shard: refused naming it.
rm "$dir/shard-00000.bin"
"$bin" ckpt inspect "$dir" > "$tmp/missing.txt" 2>&1; rc=$?
[ $rc = 1 ] && grep -q "shard-00000.bin: shard file missing" "$tmp/missing.txt" || fail "missing shard: rc $rc $(cat "$tmp/missing.txt")"
echo "ckpt cli: all checks passed"
