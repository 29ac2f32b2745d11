#!/usr/bin/env python3
"""What the continuous thoughts of a running-sum model carry (docs/results.md, session 22).

For each `coconut eval --thought-source own|zero|other` report of a running-sum run at
stage K (K thoughts in place of the first K steps), the first number the model writes is
its value of the partial sum after K + 1 digits (step K+1 reads "s + d = s'"). Counts how
often that number is the item's own partial sum and how often the donor's: the item whose
thoughts it took under `other` (the report's thought_donors; its last thought's). For
reports without donors (own, zero) the comparison is with the item `other` would take
from, the next item of its evaluation batch (all items of a running-sum set take their
thoughts at the same columns, so the rotation is over the whole batch): the chance
coincidence of two items' sums.

  tools/running_sum_swap.py DATA.json STAGE REPORT.json... [--batch-size 32]"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="the evaluated items (coconut data generate running_sum ...)")
    ap.add_argument("stage", type=int, help="the thoughts each item had (the stage, c = 1)")
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--batch-size", type=int, default=32, help="coconut eval's batch size (the run's eval.batch_size)")
    a = ap.parse_args()
    items = json.load(open(a.data))
    if not 0 <= a.stage < min(len(it["steps"]) for it in items):
        ap.error(f"stage {a.stage}: no text step left to read a partial sum from")
    partial = [int(it["steps"][a.stage].split()[0]) for it in items]
    print("| report | thought source | accuracy | first number = own partial sum | = donor's |")
    print("|---|---|---|---|---|")
    for path in a.reports:
        r = json.load(open(path))
        own = donor = 0
        for it in r["items"]:
            i = it["index"]
            start = i // a.batch_size * a.batch_size
            size = min(start + a.batch_size, len(items)) - start
            d = it["thought_donors"][-1] if it.get("thought_donors") else start + (i - start + 1) % size
            words = it["generated"].split()
            first = int(words[0]) if words and words[0].isdigit() else None
            own += first == partial[i]
            donor += first == partial[d]
        n = len(r["items"])
        print(f"| {path} | {r.get('thought_source', 'own')} | {100 * r['accuracy']:.1f}% | {own}/{n} | {donor}/{n} |")


if __name__ == "__main__":
    main()
