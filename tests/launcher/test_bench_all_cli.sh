#!/usr/bin/env bash
# `coconut bench all --quick --no-torch` (issue #8's one benchmark entry point) and the
# sub-benchmark it runs under mpirun (`coconut bench memory --pp 2 --json`): the JSON rows
# and the Markdown document have every part, and the figures are sane (positive
# throughputs and ratios, bubble fractions in [0, 1), recompute growing slower than keep).
# usage: test_bench_all_cli.sh COCONUT_BINARY TMP_DIR
set -uo pipefail
bin=$1 tmp=$2/bench_all_cli
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

# The sub-benchmark: 2 schedules x 2 ranks = 4 JSON rows, tiny shapes.
mpirun --oversubscribe -np 2 "$bin" bench memory --pp 2 --schedule gpipe,ring --policy keep --min-thoughts 2 \
  --max-thoughts 2 --steps 1 --layers 2 --d-model 32 --heads 2 --micro-batch 2 --micro-batches 4 --question 12 \
  --rest 3 --threads 1 --json > "$tmp/memory.jsonl" 2> "$tmp/memory.err" ||
  fail "bench memory --pp 2 --json exited $?: $(cat "$tmp/memory.err")"
python3 - "$tmp/memory.jsonl" << 'PY' || fail "bench memory --json rows: $(cat "$tmp/memory.jsonl")"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
assert len(rows) == 4, f"{len(rows)} rows, want 4"
assert sorted((r["schedule"], r["rank"]) for r in rows) == [("gpipe", 0), ("gpipe", 1), ("ring", 0), ("ring", 1)]
for r in rows:
    assert r["policy"] == "keep" and r["thoughts"] == 2, r
    assert 0 <= r["bubble_measured"] < 1 and 0 <= r["bubble_simulated"] < 1, r
    assert r["peak_bytes"] > 0 and r["simulated_bytes"] > 0 and r["step_seconds"] > 0, r
PY

# A bad option is a usage error.
"$bin" bench all --bogus > /dev/null 2>&1
[ $? -eq 2 ] || fail "bench all --bogus did not exit with code 2"

# The whole document, quick.
start=$SECONDS
"$bin" bench all --quick --no-torch --dir "$tmp/scratch" > "$tmp/doc.md" 2> "$tmp/doc.err" ||
  fail "bench all exited $?: $(cat "$tmp/doc.err") $(cat "$tmp/doc.md")"
echo "bench all --quick --no-torch: $((SECONDS - start)) s"
cat "$tmp/doc.md"
[ -e "$tmp/scratch" ] && fail "bench all left its scratch folder"
python3 - "$tmp/doc.md" << 'PY' || fail "the document is incomplete or has figures out of range"
import re, sys
doc = open(sys.argv[1]).read()
for heading in ["# coconut benchmarks", "## Summary", "## 1. Coconut training step against PyTorch",
                "## 2. Step time and activation memory", "## 3. Pipeline bubble", "## 4. Checkpoint save and load"]:
    assert heading in doc, f"no '{heading}'"
def section(title):
    return doc.split(title, 1)[1].split("\n## ", 1)[0]
def rows(text):
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")][1:]  # without the header
summary = {r[0]: r[1:] for r in rows(section("## Summary"))}
def num(text):
    return float(text.rstrip("x%"))
def find(prefix):
    hits = [v for k, v in summary.items() if k.startswith(prefix)]
    assert len(hits) == 1, f"summary rows starting with '{prefix}': {len(hits)}"
    return hits[0]
for shape in ["bench shape", "reproduction shape"]:  # the default shape and the reproduction's model
    assert find(f"training step tokens/s, {shape}")[1] == "not run"  # --no-torch
    assert num(find(f"training step tokens/s, {shape}")[0]) > 0
    gflops, peak, percent = map(num, find(f"training step GFLOP/s, {shape}"))
    assert gflops > 0 and peak > 0 and 0 < percent < 100, (shape, gflops, peak, percent)
recompute, keep, ratio = map(num, find("activation MiB per extra thought"))
assert keep > 0 and 0 < recompute < keep and 0 < ratio < 1, (recompute, keep, ratio)
for schedule in ["gpipe", "gpipe-pass", "1f1b", "ring"]:
    measured, simulated, ratio = map(num, find(f"pipeline bubble {schedule} "))
    assert 0 <= measured < 1 and 0 <= simulated < 1 and ratio >= 0, (schedule, measured, simulated)
for prefix in ["checkpoint save vs plain write", "checkpoint load vs plain read"]:
    ours, plain, ratio = map(num, find(prefix))
    assert ours > 0 and plain > 0 and ratio > 0, (prefix, ours, plain, ratio)
memory = rows(section("## 2."))
assert [int(r[0]) for r in memory] == list(range(1, 9)), memory
for r in memory:
    assert all(num(c) > 0 for c in r[2:6]), r
bubbles = rows(section("## 3."))
assert [r[0] for r in bubbles] == ["gpipe", "gpipe-pass", "1f1b", "ring"], bubbles
for r in bubbles:
    for cell in r[1:3]:
        m, s = map(float, cell.split("/"))
        assert 0 <= m < 1 and 0 <= s < 1, r
assert len(rows(section("## 4."))) == 6
PY
echo "PASS"
