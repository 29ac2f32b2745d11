#!/usr/bin/env bash
# `coconut report RUN_DIR` on a hand-written metrics.jsonl: the text summary, the PNG
# (signature, size, curve and stage-line colours, decoded with python's zlib), --out,
# --x step (with steps.jsonl's gradient norms), and the exit codes (2 = usage error,
# 1 = bad input naming the file/line).
#   test_report_cli.sh COCONUT_BINARY TEMP_DIR
set -euo pipefail

bin=$1
mkdir -p "$2"
work=$(mktemp -d "$2/report_cli.XXXXXX")
trap 'rm -rf "$work"' EXIT

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

# A 6-epoch run over stages 0,0,1,1,2,2: accuracy only on some epochs, an unknown
# field, a blank line, a per-step row and a row of an unknown kind.
run=$work/run
mkdir -p "$run"
cat >"$run/metrics.jsonl" <<'JSONL'
{"epoch": 0, "stage": 0, "step": 10, "loss": 2.0, "seconds": 1.5, "tokens_per_s": 900.0}
{"epoch": 1, "stage": 0, "step": 20, "loss": 1.6, "seconds": 1.4, "tokens_per_s": 910.0, "valid_accuracy": 0.25}
{"kind": "step", "epoch": 2, "stage": 1, "step": 21, "loss": 1.9}

{"epoch": 2, "stage": 1, "step": 30, "loss": 1.2, "seconds": 1.6, "tokens_per_s": 880.0, "some_future_field": [1, 2]}
{"epoch": 3, "stage": 1, "step": 40, "loss": 0.9, "seconds": 1.6, "tokens_per_s": 870.0, "valid_accuracy": 0.5}
{"kind": "probe", "epoch": 3, "loss": "not a number, but not a curve either"}
{"epoch": 4, "stage": 2, "step": 50, "loss": 0.7, "seconds": 1.7, "tokens_per_s": 860.0, "valid_accuracy": 0.75}
{"epoch": 5, "stage": 2, "step": 60, "loss": 0.5, "seconds": 1.7, "tokens_per_s": 850.0, "valid_accuracy": 0.7}
JSONL

"$bin" report "$run" >"$work/out.txt" 2>"$work/err.txt" || fail "report exited $?: $(cat "$work/err.txt")"
for want in "final loss 0.5000 (epoch 5, stage 2)" "best valid_accuracy 0.7500 (epoch 4, stage 2)" \
            "stages: 0: epochs 0-1; 1: epochs 2-3; 2: epochs 4-5" "wrote $run/report.png" \
            "valid accuracy at each stage's end, %: 25.0 / 50.0 / 70.0"; do
  grep -qF -- "$want" "$work/out.txt" || fail "summary lacks '$want': $(cat "$work/out.txt")"
done
pass "summary"

# check_png FILE WIDTH HEIGHT STAGE_LINE_COLUMNS MIN_BLUE: decodes the PNG (Pillow
# when installed, else a standard-library decoder) and checks its size, the blue of the
# first series in each panel, and the dashed grey stage lines (columns holding many grey
# pixels).
check_png() {
  python3 - "$@" <<'PY'
import struct, sys, zlib
path, want_w, want_h, want_lines, min_blue = sys.argv[1], *map(int, sys.argv[2:6])
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
w, h = struct.unpack(">II", data[16:24])
assert data[12:16] == b"IHDR" and (w, h) == (want_w, want_h), f"size {w}x{h}, want {want_w}x{want_h}"
try:
    from PIL import Image
    img = Image.open(path).convert("RGB")
    rows = [bytes(img.crop((0, y, w, y + 1)).tobytes()) for y in range(h)]
except ImportError:
    ihdr, idat, pos = None, b"", 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR": ihdr = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + n])
        if kind == b"IDAT": idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    assert ihdr[2:5] == (8, 2, 0) and ihdr[6] == 0, f"unexpected PNG format {ihdr}"
    raw, stride, rows, prev = zlib.decompress(idat), w * 3, [], bytearray(w * 3)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a, b, c = (line[i - 3] if i >= 3 else 0), prev[i], (prev[i - 3] if i >= 3 else 0)
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line)); prev = line
def count(rgb, ys):
    return sum(1 for y in ys for x in range(0, 3 * w, 3) if rows[y][x:x + 3] == rgb)
blue = bytes((0x1f, 0x77, 0xb4))
for top in (0, h // 2):
    n = count(blue, range(top, top + h // 2))
    assert n >= min_blue, f"panel at y={top}: {n} blue pixels, want >= {min_blue}"
grey = bytes((89, 89, 89))
per_col = [0] * w
for r in rows:
    for x in range(w):
        if r[3 * x:3 * x + 3] == grey: per_col[x] += 1
lines = sum(n > 100 for n in per_col)
assert lines == want_lines, f"{lines} columns of stage-line grey, want {want_lines}"
print(f"png ok: {w}x{h}, {lines} stage-line columns")
PY
}
# Two stage switches, each line 2 px wide, at the same columns in both panels (they
# share the x axis).
check_png "$run/report.png" 900 720 4 300 || fail "report.png"
pass "report.png"

"$bin" report "$run" --out "$work/steps.png" --x step >"$work/out.txt" 2>"$work/err.txt" ||
  fail "--x step exited $?: $(cat "$work/err.txt")"
grep -q "(1 per-step)" "$work/out.txt" || fail "--x step summary: $(cat "$work/out.txt")"
# The one per-step row is the first (blue) series of the loss panel: a lone dot.
check_png "$work/steps.png" 900 720 4 30 || fail "steps.png"
pass "--out and --x step"

# With steps.jsonl (every step's gradient norm; null where it was not finite), --x step
# adds a third panel.
python3 - "$run/steps.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for s in range(1, 61):
        norm = None if s == 33 else 1.0 + (s == 45)
        f.write(json.dumps({"step": s, "epoch": (s - 1) // 10, "loss": 2.0, "grad_norm": norm}) + "\n")
PY
"$bin" report "$run" --out "$work/norms.png" --x step >"$work/out.txt" 2>"$work/err.txt" ||
  fail "--x step with steps.jsonl exited $?: $(cat "$work/err.txt")"
grep -qF "gradient norm: median 1, max 2 (step 45); 1 of 60 steps not finite" "$work/out.txt" ||
  fail "gradient norm summary: $(cat "$work/out.txt")"
check_png "$work/norms.png" 900 1080 4 30 || fail "norms.png"
pass "--x step draws the gradient norms of steps.jsonl"

# ---- usage errors (exit 2) and bad input (exit 1) ------------------------------------
rc=0; "$bin" report >"$work/out.txt" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "usage: coconut report" "$work/out.txt" || fail "no arguments: exit $rc, $(cat "$work/out.txt")"
"$bin" report --help | grep -q -- "--out" || fail "--help lacks --out"
expect 2 "unknown option '--bogus'" "$bin" report "$run" --bogus
expect 2 "--x expects 'epoch' or 'step'" "$bin" report "$run" --x time
expect 2 "is not a directory" "$bin" report "$work/missing"
mkdir -p "$work/empty"
expect 1 "metrics.jsonl' not found" "$bin" report "$work/empty"
printf '{"epoch": 0, "loss": 1}\n{"epoch": 1, "loss": \n' >"$work/empty/metrics.jsonl"
expect 1 "metrics.jsonl:2: not a JSON line" "$bin" report "$work/empty"
printf '{"epoch": 0, "loss": 1}\n[1, 2]\n' >"$work/empty/metrics.jsonl"
expect 1 "metrics.jsonl:2: expected a JSON object" "$bin" report "$work/empty"
printf '{"epoch": 0, "loss": 1}\n{"epoch": 1, "loss": "high"}\n' >"$work/empty/metrics.jsonl"
expect 1 "metrics.jsonl:2: 'loss' must be a number" "$bin" report "$work/empty"
: >"$work/empty/metrics.jsonl"
expect 1 "has no epoch rows" "$bin" report "$work/empty"
expect 1 "cannot write the plot '/nonexistent_dir_for_coconut_tests/r.png'" "$bin" report "$run" --out /nonexistent_dir_for_coconut_tests/r.png
pass "exit codes and messages"
echo "all report CLI checks passed"
