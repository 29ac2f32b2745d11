#!/usr/bin/env python3
"""A small arithmetic task for checking what latent thoughts learn (docs/results.md):
K random digits, the answer their sum modulo 10, each chain-of-thought step one
partial sum ("2 + 9 = 1"). Writes the official JSON format (question, steps, answer)
that `coconut train` reads with data.kind: file.

  tools/running_sum_data.py --digits 5 --train 4000 --valid 200 --out-dir DIR
writes DIR/train{K}.json (seed 1) and DIR/valid{K}.json (seed 2)."""
import argparse
import json
import os
import random


def make(count, seed, digits):
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        d = [rng.randrange(10) for _ in range(digits)]
        total, steps = d[0], []
        for x in d[1:]:
            nxt = (total + x) % 10
            steps.append(f"{total} + {x} = {nxt}")
            total = nxt
        items.append({"question": "sum " + " ".join(map(str, d)) + " mod 10", "steps": steps, "answer": str(total)})
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digits", type=int, default=5)
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--valid", type=int, default=200)
    ap.add_argument("--out-dir", required=True)
    a = ap.parse_args()
    if a.digits < 2:
        ap.error("--digits must be at least 2 (one step)")
    os.makedirs(a.out_dir, exist_ok=True)
    for name, count, seed in (("train", a.train, 1), ("valid", a.valid, 2)):
        path = os.path.join(a.out_dir, f"{name}{a.digits}.json")
        with open(path, "w") as f:
            json.dump(make(count, seed, a.digits), f)
        print(f"{path}: {count} items")


if __name__ == "__main__":
    main()
