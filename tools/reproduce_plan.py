#!/usr/bin/env python3
"""The plan of tools/reproduce.sh (issue #8, docs/results.md): how many training items of
each dataset the 12 runs can take in the time budget, from the calibration it measured.

    tools/reproduce_plan.py OUT BUDGET_MIN USED_S EPOCHS FULL_PROSQA FULL_PRONTOQA
                            VALID_PROSQA TEST_PRONTOQA EVAL_MAX_ITEMS RESERVE_S MIN_ITEMS > OUT/plan.json

Every run trains EPOCHS epochs on the first N items of its dataset. A run's estimate is
N times the sum over its epochs of the measured seconds per item of one pass (cot) up to
7 passes (no_curriculum), interpolated by the thoughts it feeds back in that epoch, plus
its final evaluation. A sweep sets the same keys for all its runs, so all get the same
time cap (train.max_minutes): 1.25 x the estimate of the sweep's slowest run (at least
30 s). N is the largest for which the caps of all runs add up to what is left of the
budget (after USED_S, and RESERVE_S for the probe and the tables), split between the
datasets by their number of runs: the runs finish within the budget even when the
machine gets slower.
"""
import json
import sys

MARGIN = 1.25  # cap / the slowest run's estimate
MIN_CAP = 0.5  # minutes: below it the timing noise of a process would cut the tiny --quick runs

RUNS = {  # dataset: [(sweep, method, c)], as in configs/sweeps/reproduce_*.yaml
    "prosqa": [("prosqa_methods", m, 1) for m in ["cot", "no_cot", "pause_as_thought", "no_curriculum"]]
              + [("prosqa_c", "coconut", c) for c in [0, 1, 2]],
    "prontoqa": [("prontoqa", m, 1) for m in ["cot", "no_cot", "coconut", "pause_as_thought", "no_curriculum"]],
}


def latents(method, c, epoch, eps):
    """Thoughts fed back per sample in this epoch (6 latent stages of eps epochs)."""
    if method == "coconut":
        return min(epoch // eps, 6) * c
    return 6 * c if method == "no_curriculum" else 0  # cot, no_cot, pause_as_thought: one pass


def main():
    a = sys.argv[1:]
    out, budget, used, epochs = a[0], float(a[1]), float(a[2]), int(a[3])
    full = {"prosqa": int(a[4]), "prontoqa": int(a[5])}
    evaluated = {"prosqa": int(a[6]), "prontoqa": int(a[7])}
    if int(a[8]) > 0:
        evaluated = {k: min(v, int(a[8])) for k, v in evaluated.items()}
    reserve_s, min_items = float(a[9]), int(a[10])
    eps = max(1, epochs // 10)  # the paper: 5 epochs per stage of 50
    left = budget * 60 - used - reserve_s
    n_runs = sum(len(r) for r in RUNS.values())
    plan = {"budget_minutes": budget, "epochs": epochs, "epochs_per_stage": eps, "datasets": {}}
    for ds, runs in RUNS.items():
        cal = {m: json.load(open(f"{out}/calibration/{ds}-{m}.json")) for m in ["cot", "no_curriculum"]}
        s0, s6 = cal["cot"]["train_s_per_item"], cal["no_curriculum"]["train_s_per_item"]
        ev = max(x["eval_s_per_item"] for x in cal.values()) * evaluated[ds]

        def per_item(m, c):
            return sum(s0 + (s6 - s0) * latents(m, c, e, eps) / 6 for e in range(epochs))

        sweeps = sorted({sw for sw, _, _ in runs})
        slowest = {sw: max(per_item(m, c) for s, m, c in runs if s == sw) for sw in sweeps}
        count = {sw: sum(1 for s, _, _ in runs if s == sw) for sw in sweeps}
        # sum over sweeps of count * MARGIN * (N * slowest + ev) = this dataset's share
        share = left * len(runs) / n_runs
        n = int((share / MARGIN - ev * len(runs)) / sum(count[sw] * slowest[sw] for sw in sweeps))
        n = min(full[ds], n)
        if n < min_items:
            sys.exit(f"a budget of {budget} minutes leaves {n} {ds} items per epoch: give more minutes or fewer --epochs")
        plan["datasets"][ds] = {
            "train_items": n, "full_items": full[ds], "seconds_per_item": {"cot": s0, "no_curriculum": s6},
            "runs": [{"sweep": sw, "method": m, "c": c, "estimate_minutes": (n * per_item(m, c) + ev) / 60,
                      "max_minutes": max(MIN_CAP, round(MARGIN * (n * slowest[sw] + ev) / 60, 2))}
                     for sw, m, c in runs]}
    print(json.dumps(plan, indent=1))


if __name__ == "__main__":
    main()
