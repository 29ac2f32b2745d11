#!/usr/bin/env bash
# `coconut bench coconut` with its PyTorch peer (bench/torch_coconut_step.py) on a tiny
# shape: the peer starts, answers every step request (its steps alternate with ours),
# computes the same first-step loss (the command exits 1 otherwise) and both rows and
# the ratio lines are printed. Exit 77 (skipped) where torch or transformers is missing.
#   test_bench_torch_peer.sh COCONUT_BINARY
set -euo pipefail
bin=$1
python3 -c "import torch, transformers" 2>/dev/null || { echo "torch/transformers not importable: skipped"; exit 77; }
out=$("$bin" bench coconut --steps 3 --threads 1 --layers 1 --d-model 32 --heads 2 --vocab 40 --question 12 \
  --thoughts 2 --batch 2 2>/dev/null) || { echo "FAIL: bench coconut exited non-zero"; echo "$out"; exit 1; }
echo "$out"
python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
# | system | ms/step | tokens/s | ...
rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
        for m in re.finditer(r"^\| (coconut|pytorch)[^|]*\| ([0-9.]+) \| ([0-9]+) \|", out, re.M)}
assert set(rows) == {"coconut", "pytorch"} and all(v[0] > 0 for v in rows.values()), rows
m = re.search(r"speed ratio coconut / pytorch \(tokens/s\): ([0-9.]+)x; of the best steps \(([0-9.]+) / ([0-9.]+) ms\)", out)
assert m, out
tokens_ratio = rows["coconut"][1] / rows["pytorch"][1]
assert abs(float(m.group(1)) - tokens_ratio) <= 0.01 * tokens_ratio, (m.group(1), tokens_ratio)
assert float(m.group(2)) <= rows["coconut"][0] + 0.05 and float(m.group(3)) <= rows["pytorch"][0] + 0.05, out
d = float(re.search(r"relative difference ([0-9.e+-]+)\)", out).group(1))
assert d < 1e-4, d
print("bench coconut with the PyTorch peer: ok")
PY
