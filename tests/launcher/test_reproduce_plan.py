#!/usr/bin/env python3
"""tools/reproduce_plan.py on made-up calibrations: the runs' time caps fill what is left
of the budget without passing it, split by number of runs; a dataset that cannot use
its share trains on all its items and the other dataset gets the rest; a budget too
small for MIN_ITEMS is refused with a message.
usage: test_reproduce_plan.py REPO TMP_DIR"""
import json
import os
import subprocess
import sys

repo, tmp = sys.argv[1], os.path.join(sys.argv[2], "reproduce_plan")
os.makedirs(f"{tmp}/calibration", exist_ok=True)
# seconds per training item: one pass (cot) and 7 passes (no_curriculum); evaluation per item
for ds, s0, s6 in [("prosqa", 0.004, 0.012), ("prontoqa", 0.003, 0.006)]:
    for m, s in [("cot", s0), ("no_curriculum", s6)]:
        json.dump({"train_s_per_item": s, "eval_s_per_item": 0.01}, open(f"{tmp}/calibration/{ds}-{m}.json", "w"))

BUDGET_MIN, USED_S, RESERVE_S = 60, 100, 50
LEFT = BUDGET_MIN * 60 - USED_S - RESERVE_S
ROUNDING_S = 0.3  # a cap is in minutes rounded to 0.01


def plan(full_prosqa, full_prontoqa, budget=BUDGET_MIN, used=USED_S, reserve=RESERVE_S, min_items=32, eval_max=0):
    args = [sys.executable, f"{repo}/tools/reproduce_plan.py", tmp, str(budget), str(used), "10",
            str(full_prosqa), str(full_prontoqa), "500", "800", str(eval_max), str(reserve), str(min_items)]
    return subprocess.run(args, capture_output=True, text=True)


def caps_s(p, ds):
    return sum(r["max_minutes"] for r in p["datasets"][ds]["runs"]) * 60


def per_item_cap_s(p, ds):
    """What one more item per epoch adds to the dataset's caps (from its largest cap)."""
    d = p["datasets"][ds]
    return caps_s(p, ds) / max(1, d["train_items"]) * 1.01 + 1.0  # rounding of the minutes


failures = []


def check(ok, what):
    print(("ok  " if ok else "FAIL") + " " + what)
    if not ok:
        failures.append(what)


# 1. Both datasets larger than their shares: caps split 7 : 5 (runs), summing to the budget left.
r = plan(10**7, 10**7)
check(r.returncode == 0, f"plan with large datasets exits 0 ({r.stderr.strip()})")
p = json.loads(r.stdout)
for ds, runs in [("prosqa", 7), ("prontoqa", 5)]:
    share = LEFT * runs / 12
    got = caps_s(p, ds)
    check(share - per_item_cap_s(p, ds) * 10 <= got <= share + ROUNDING_S * runs,
          f"{ds}: caps {got:.0f} s fill its share {share:.0f} s ({p['datasets'][ds]['train_items']} items)")

# 2. ProntoQA cheaper than its share: all its items, and ProsQA gets the rest of the budget.
r = plan(10**7, 2000)
check(r.returncode == 0, "plan with a small ProntoQA exits 0")
q = json.loads(r.stdout)
check(q["datasets"]["prontoqa"]["train_items"] == 2000, "ProntoQA trains on all 2000 items")
total = caps_s(q, "prosqa") + caps_s(q, "prontoqa")
check(LEFT - per_item_cap_s(q, "prosqa") * 10 <= total <= LEFT + ROUNDING_S * 12,
      f"caps {total:.0f} s fill the {LEFT} s left")
check(q["datasets"]["prosqa"]["train_items"] > p["datasets"]["prosqa"]["train_items"],
      f"ProsQA gets more items ({q['datasets']['prosqa']['train_items']}) than its 7/12 share bought "
      f"({p['datasets']['prosqa']['train_items']})")

# 3. Both datasets small: all items of both, caps well inside the budget.
r = plan(300, 200)
s = json.loads(r.stdout)
check(r.returncode == 0 and s["datasets"]["prosqa"]["train_items"] == 300 and
      s["datasets"]["prontoqa"]["train_items"] == 200, "small datasets: all items of both")

# 4. --quick's shape: 48 items each, 8 evaluated, 2 minutes of which 40 s went to the
# calibration. ProntoQA's 5 caps at their 30 s floor add up to more than is left, but the
# floor is not what the runs are expected to use: ProntoQA hands on the rest of its
# share, and ProsQA still gets its 16 items or more.
r = plan(48, 48, budget=2, used=40, reserve=15, min_items=16, eval_max=8)
q4 = json.loads(r.stdout) if r.returncode == 0 else {"datasets": {}}
check(r.returncode == 0 and q4["datasets"]["prontoqa"]["train_items"] == 48 and
      q4["datasets"]["prosqa"]["train_items"] >= 16,
      f"--quick's 2 minutes: all 48 ProntoQA items, {q4['datasets'].get('prosqa', {}).get('train_items')} ProsQA "
      f"items ({r.stderr.strip()})")

# 5. A budget that buys fewer than 32 items is refused, naming the dataset.
r = plan(10**7, 10**7, budget=3)
check(r.returncode != 0 and "give more minutes" in r.stderr, f"3 minutes refused: '{r.stderr.strip()}'")

sys.exit(1 if failures else 0)
