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
machine gets slower. A dataset whose share buys more than all its items trains on all of
them, and what it leaves goes to the other dataset (the paper's ProntoQA, 9,000 items, is
cheaper than its share of a 2-hour budget; ProsQA then gets more of its 17,886).
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


def dataset_costs(out, ds, runs, epochs, eps, evaluated):
    """The calibrated costs of one dataset's runs, as functions of N (items per epoch)."""
    cal = {m: json.load(open(f"{out}/calibration/{ds}-{m}.json")) for m in ["cot", "no_curriculum"]}
    s0, s6 = cal["cot"]["train_s_per_item"], cal["no_curriculum"]["train_s_per_item"]
    ev = max(x["eval_s_per_item"] for x in cal.values()) * evaluated

    def per_item(m, c):
        return sum(s0 + (s6 - s0) * latents(m, c, e, eps) / 6 for e in range(epochs))

    sweeps = sorted({sw for sw, _, _ in runs})
    slowest = {sw: max(per_item(m, c) for s, m, c in runs if s == sw) for sw in sweeps}
    count = {sw: sum(1 for s, _, _ in runs if s == sw) for sw in sweeps}

    def cap_minutes(sw, n):
        return max(MIN_CAP, round(MARGIN * (n * slowest[sw] + ev) / 60, 2))

    def budget_s(n):  # the seconds the plan sets aside for the dataset's runs (the caps before their floor)
        return sum(count[sw] * MARGIN * (n * slowest[sw] + ev) for sw in sweeps)

    def items_for(share_s):  # the largest N whose caps fit the share
        return max(0, int((share_s / MARGIN - ev * len(runs)) / sum(count[sw] * slowest[sw] for sw in sweeps)))

    return {"seconds_per_item": {"cot": s0, "no_curriculum": s6}, "eval_s": ev, "per_item": per_item,
            "cap_minutes": cap_minutes, "budget_s": budget_s, "items_for": items_for}


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
    plan = {"budget_minutes": budget, "epochs": epochs, "epochs_per_stage": eps, "datasets": {}}
    costs = {ds: dataset_costs(out, ds, runs, epochs, eps, evaluated[ds]) for ds, runs in RUNS.items()}
    # Shares by number of runs; a dataset that cannot use its share takes all its items
    # and hands the rest of its share to the others.
    items, open_ds = {}, set(RUNS)
    while open_ds:
        n_runs = sum(len(RUNS[ds]) for ds in open_ds)
        fit = {ds: costs[ds]["items_for"](left * len(RUNS[ds]) / n_runs) for ds in open_ds}
        full_ds = {ds for ds in open_ds if fit[ds] >= full[ds]}
        if not full_ds:
            items.update(fit)
            break
        for ds in full_ds:
            items[ds] = full[ds]
            left -= costs[ds]["budget_s"](full[ds])
        open_ds -= full_ds
    for ds, runs in RUNS.items():
        n, c = items[ds], costs[ds]
        if n < min_items:
            sys.exit(f"a budget of {budget} minutes leaves {n} {ds} items per epoch: give more minutes or fewer --epochs")
        plan["datasets"][ds] = {
            "train_items": n, "full_items": full[ds], "seconds_per_item": c["seconds_per_item"],
            "runs": [{"sweep": sw, "method": m, "c": cc, "estimate_minutes": (n * c["per_item"](m, cc) + c["eval_s"]) / 60,
                      "max_minutes": c["cap_minutes"](sw, n)}
                     for sw, m, cc in runs]}
    print(json.dumps(plan, indent=1))


if __name__ == "__main__":
    main()
