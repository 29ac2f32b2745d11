#!/usr/bin/env python3
"""The results page of tools/reproduce.sh (issue #8): reads OUT/plan.json and every run's
files (eval_valid.json, metrics.jsonl, sweep_done.json, train.log) and prints markdown:
our accuracies beside the paper's Table 1, then per run the model, data, epochs, final
stage and wall time, the accuracy against c and the probe's figures.

    tools/reproduce_table.py OUT TOTAL_SECONDS > OUT/results.md

A run without a result (not run yet, or failed: see its train.log) shows "no result".
The answers table says how far a model got when its accuracy is low: on ProsQA, how
often the answer names the question's subject and one of its two options (choosing
between them at random would be right half the time); on ProntoQA, how often it says True;
for CoT, the share of the rules its chains write ("Every X is a Y.", "Xs are Ys.") that the
question states word for word (1 for the reference chains): whether the model reads the
question or invents its facts.
"""
import json
import os
import re
import sys

# arXiv 2412.06769 Table 1 (GPT-2 124M pre-trained, mean of 5 seeds): accuracy in %.
PAPER = {  # method: (ProntoQA, ProsQA)
    "cot": (98.8, 77.5),
    "no_cot": (93.8, 76.7),
    "coconut": (99.8, 97.0),
    "pause_as_thought": (100.0, 96.6),
    "no_curriculum": (52.4, 76.1),
}
ROWS = [("cot", "CoT"), ("no_cot", "No-CoT"), ("coconut", "Coconut (c=1)"),
        ("pause_as_thought", "pause as thought"), ("no_curriculum", "w/o curriculum")]


def run_dir(out, dataset, method, c=1):
    if dataset == "prosqa":
        return f"{out}/prosqa_c/c_thought-{c}" if method == "coconut" else f"{out}/prosqa_methods/method-{method}"
    return f"{out}/prontoqa/method-{method}"


def read_run(path):
    """What a run left behind; None when it has not finished."""
    done = os.path.join(path, "sweep_done.json")
    if not os.path.exists(done):
        return None
    r = {"wall": json.load(open(done))["wall_seconds"]}
    ev = json.load(open(os.path.join(path, "eval_valid.json")))
    r.update(accuracy=ev["accuracy"], correct=ev["correct"], total=ev["total"])
    rows = [json.loads(l) for l in open(os.path.join(path, "metrics.jsonl"))]
    epochs = [x for x in rows if "kind" not in x]
    r.update(epochs=len(epochs), stage=epochs[-1]["stage"], loss=epochs[-1]["loss"])
    m = re.search(r"model: (\d+) layers, d_model (\d+), (\d+) heads, vocab (\d+), ([0-9.]+)M parameters",
                  open(os.path.join(path, "train.log")).read())
    r["model"] = f"{m.group(1)} layers, d_model {m.group(2)}, {m.group(3)} heads, vocab {m.group(4)}, {m.group(5)}M" if m else "?"
    return r


def rule_sentences(text):
    """The rules a chain of thought states: "Every/Each X is ..." and "Xs are ..." sentences."""
    sentences = [w.split() for w in re.split(r"[.\n]", text)]
    return [" ".join(w) + "." for w in sentences if len(w) > 1 and (w[0] in ("Every", "Each") or w[1] == "are")]


def rules_stated(question, chain):
    """(rules of the chain stated in the question, rules of the chain)."""
    rules = rule_sentences(chain)
    return sum(r in question for r in rules), len(rules)


def answer_shape(path, dataset, method):
    """Cells of the answers table for a finished run: shares of its evaluated answers."""
    # config.yaml: a comment line, then the effective configuration as one JSON-style line.
    text = "".join(l for l in open(os.path.join(path, "config.yaml")) if not l.startswith("#"))
    try:
        config = json.loads(text)
    except ValueError:
        config = None
    ev = json.load(open(os.path.join(path, "eval_valid.json")))
    items = ev["items"]
    if not items:
        return ["-"] * 4
    share = lambda n: f"{100 * n / len(items):.1f}"
    # The questions are needed for ProsQA's shares and for the CoT rules only.
    if dataset == "prosqa" or method == "cot":
        if config is None:
            return ["?"] * 4
        valid = json.load(open(config["data"]["valid_file"]))
    rules = "-"
    if method == "cot":
        counts = [rules_stated(valid[it["index"]]["question"], it["generated"].split("###")[0]) for it in items]
        stated, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        rules = f"{100 * stated / total:.1f} ({stated}/{total})" if total else "no rules"
    if dataset == "prontoqa":
        return [share(sum(it["prediction"] == "True" for it in items)), "-", "-", rules]
    subject = options = 0
    for it in items:
        m = re.search(r"Is (\S+) a (\S+) or (\S+)\?", valid[it["index"]]["question"])
        answer = it["generated"].split("###")[-1].strip()
        a = re.match(r"(\S+) is an? (\S+?)\.?$", answer)
        if m and a:
            subject += a.group(1) == m.group(1)
            options += a.group(1) == m.group(1) and a.group(2) in (m.group(2), m.group(3))
    return ["-", share(subject), share(options), rules]


def pct(r):
    return "no result" if r is None else f"{100 * r['accuracy']:.1f} ({r['correct']}/{r['total']})"


def main():
    out, total = sys.argv[1], float(sys.argv[2])
    plan = json.load(open(f"{out}/plan.json"))
    runs = {(ds, m): read_run(run_dir(out, ds, m)) for ds in ("prontoqa", "prosqa") for m, _ in ROWS}
    p = []
    p.append(f"# Reproduction results ({out})\n")
    overrides_file = f"{out}/overrides.txt"
    overrides = open(overrides_file).read().splitlines() if os.path.exists(overrides_file) else []
    command = " ".join([f"--budget-minutes {plan['budget_minutes']:g}"] + [f"--set {o}" for o in overrides])
    p.append(f"`tools/reproduce.sh {command}`: {total / 60:.1f} minutes for the invocation that wrote this page. "
             f"Every run: {plan['epochs']} epochs, {plan['epochs_per_stage']} per curriculum stage; accuracy in %.\n")
    p.append("| method | ProntoQA (ours) | ProntoQA (paper) | ProsQA (ours) | ProsQA (paper) |")
    p.append("|---|---|---|---|---|")
    for m, name in ROWS:
        p.append(f"| {name} | {pct(runs['prontoqa', m])} | {PAPER[m][0]:.1f} | {pct(runs['prosqa', m])} | {PAPER[m][1]:.1f} |")
    p.append("\nPaper: arXiv 2412.06769 Table 1, pre-trained GPT-2 124M, 50 epochs on all the training items. "
             "Ours: from scratch, sized to the budget (below).\n")
    p.append("## Runs\n")
    p.append("| dataset | method | c | model | train items (of generated) | epochs trained | final stage | "
             "final loss | wall s | cap min |")
    p.append("|---|---|---|---|---|---|---|---|---|---|")
    for ds in ("prosqa", "prontoqa"):
        d = plan["datasets"][ds]
        for pr in d["runs"]:
            r = read_run(run_dir(out, ds, pr["method"], pr["c"]))
            cells = ["no result"] * 5 if r is None else [r["model"], str(r["epochs"]), str(r["stage"]),
                                                       f"{r['loss']:.4f}", f"{r['wall']:.0f}"]
            p.append(f"| {ds} | {pr['method']} | {pr['c']} | {cells[0]} | {d['train_items']} ({d['full_items']}) | "
                     f"{cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} | {pr['max_minutes']} |")
    p.append("\n## What the answers show\n")
    p.append("Shares of the evaluated answers, %: ProntoQA, answers True (the test split's labels are about "
             "half True); ProsQA, the answer names the question's subject, and names it with one of the two "
             "concepts the question offers (a random choice between them would be right half the time); "
             "CoT, the rules its chains write that the question states word for word (100 for the "
             "reference chains).\n")
    p.append("| dataset | method | c | accuracy | says True | names the subject | subject and one of the two options "
             "| CoT rules stated in the question |")
    p.append("|---|---|---|---|---|---|---|---|")
    for ds in ("prosqa", "prontoqa"):
        for pr in plan["datasets"][ds]["runs"]:
            path = run_dir(out, ds, pr["method"], pr["c"])
            r = read_run(path)
            cells = ["no result"] * 4 if r is None else answer_shape(path, ds, pr["method"])
            p.append(f"| {ds} | {pr['method']} | {pr['c']} | {pct(r)} | {cells[0]} | {cells[1]} | {cells[2]} "
                     f"| {cells[3]} |")
    p.append("\nMeasured seconds per training item and epoch before the runs (`OUT/calibration/`): " + "; ".join(
        f"{ds} cot {d['seconds_per_item']['cot']:.4f}, no_curriculum {d['seconds_per_item']['no_curriculum']:.4f}"
        for ds, d in plan["datasets"].items()) + ".\n")
    p.append("## Accuracy against c (ProsQA, Coconut)\n")
    for c in (0, 1, 2):
        p.append(f"- c = {c}: {pct(read_run(run_dir(out, 'prosqa', 'coconut', c)))}")
    p.append("\n![accuracy against c](accuracy_vs_c.png)\n")
    p.append("## Probe: frontier values of the Coconut ProsQA model\n")
    probe = f"{out}/probe_prosqa_valid.json"
    if os.path.exists(probe):
        p.append("| k | items | mean frontier size | top-1 | top-1+2 | top-1+2+3 | whole frontier |")
        p.append("|---|---|---|---|---|---|---|")
        for s in json.load(open(probe))["summary"]:
            cum = [t["mean_cumulative"] for t in s["top"]] + [float("nan")] * 3
            p.append(f"| {s['k']} | {s['items']} | {s['mean_frontier_size']:.2f} | {cum[0]:.4f} | {cum[1]:.4f} | "
                     f"{cum[2]:.4f} | {s['mean_frontier_mass']:.4f} |")
        p.append("\n![frontier values](probe_frontier.png)\n")
    else:
        p.append("no result\n")
    print("\n".join(p))


if __name__ == "__main__":
    main()
