#!/usr/bin/env python3
"""Data for the session-13 pilots of docs/results.md ("The graph form and a copying
pre-training"): does a small model from scratch learn ProsQA when the question is the bare
graph, or when it first learns to copy? (Later sessions added the lookup and ProntoQA
forms.) Ten subcommands:

  graph-form IN.json OUT.json [edges]
      ProsQA items with the question rendered as its graph, the facts in the question's
      order: "u v | u v | ... Q option option R subject" (one word per node), the steps as
      the nodes of the reference path, the answer as the target node. With `edges`
      (session 14) each step is the edge "u v" of the path, from the subject on.
  copy TOKENIZER.txt COUNT OUT.json SEED [MIN MAX]
      Copy-task items over a run's word vocabulary (RUN_DIR/tokenizer.txt): a random run of
      MIN..MAX words (default 20..60) as the question, the same words as the one step.
      The first item lists every word once, so that a run trained on the file builds the
      same vocabulary (the word tokenizer sorts its words) and can be the
      model.init_from of a run on the dataset.
  recall TOKENIZER.txt COUNT OUT.json SEED
      Associative-recall items over the same words: "k v | k v | ... R k" (each key once),
      the steps follow the pointers 1-5 hops.
  lookup TOKENIZER.txt COUNT OUT.json SEED QUERIES MIN MAX
      Session 14: dense associative recall over the same words: "k v | k v | ..." (MIN..MAX
      distinct keys, random values), and QUERIES steps "k v", each a random key of the
      question with its value: every step's value is a lookup, and every item has
      QUERIES of them (recall above has one chain of 1-5).
  lookup-score ITEMS.json EVAL_REPORT.json
      For a run on lookup items: the share of generated "k v" steps that are pairs of
      the question, overall and among those whose key is in the question.
  prontoqa-form IN.json OUT.json
      Session 15: ProntoQA items in the same edge form. Each rule is "x y" (every x is a y)
      or "x P" / "x not P" (property P), each fact about the entity "Name x"; the
      question is the facts in their order, " | "-separated, then "Q Name [not] P"; the
      steps are the reference chain's edges ("Max dumpus", "dumpus impus", ...,
      "zumpus not snowy"); the answer stays True or False.
  prontoqa-score ITEMS.json EVAL_REPORT.json
      For a CoT run on prontoqa-form items: the share of generated steps that are facts
      of the question, chains equal to the reference, answers "True".
  prontoqa-last IN.json OUT.json
      Session 17: prontoqa-form items with the last step (the property, "vumpus not loud")
      moved into the answer ("vumpus not loud # True"), so that a curriculum over the
      remaining steps makes every hop of the chain latent and the property stays text.
      (The scoring reads the answer after the last "#", so it is still True or False.)
  prontoqa-last-score ITEMS.json EVAL_REPORT.json
      For a run on prontoqa-last items: written property steps equal to the reference's,
      those answered right, and the accuracy.
  edge-steps GRAPH_ITEMS.json EVAL_REPORT.json
      For a CoT run on graph-form items: the share of generated steps that are edges of
      the item's graph (from the subject on), chains equal to the reference, answers that
      are one of the two options.
"""
import json
import random
import re
import sys


def graph_form(src, dst, edge_steps=False):
    out = []
    for x in json.load(open(src)):
        edges, query = [], None
        for s in re.split(r"(?<=[.?])\s+", x["question"].strip()):
            m = re.fullmatch(r"(?:Every )?(\w+) is an? (\w+)\.", s)
            if m:
                edges.append(f"{m.group(1)} {m.group(2)}")
                continue
            m = re.fullmatch(r"Is (\w+) an? (\w+) or (?:an? )?(\w+)\?", s)
            if not m:
                sys.exit(f"graph-form: unexpected sentence {s!r}")
            query = m.groups()
        path = [re.search(r"(\w+)\.$", step).group(1) for step in x["steps"]]
        target = re.search(r"(\w+)\.$", x["answer"]).group(1)
        question = " | ".join(edges) + f" Q {query[1]} {query[2]} R {query[0]}"
        if edge_steps:
            nodes = [query[0]] + path
            path = [f"{u} {v}" for u, v in zip(nodes, nodes[1:])]
        out.append({"question": question, "steps": path, "answer": target})
    json.dump(out, open(dst, "w"), indent=0)
    print(f"{len(out)} items -> {dst}")


def vocabulary(tokenizer_file):
    lines = open(tokenizer_file).read().split("\n")[2:]
    words = [l.split(" ", 1)[1] for l in lines if " " in l]
    return [w for w in words if not w.startswith("<") and w not in ("\\n", "#")]


def copy_items(tokenizer_file, count, dst, seed, lo=20, hi=60):
    words = vocabulary(tokenizer_file)
    rng = random.Random(seed)
    out = [{"question": " ".join(words), "steps": [" ".join(words)], "answer": words[-1]}]
    for _ in range(count):
        seq = [rng.choice(words) for _ in range(rng.randint(lo, hi))]
        out.append({"question": " ".join(seq), "steps": [" ".join(seq)], "answer": seq[-1]})
    json.dump(out, open(dst, "w"))
    print(f"{len(out)} items over {len(words)} words -> {dst}")


def recall_items(tokenizer_file, count, dst, seed):
    words = vocabulary(tokenizer_file)
    nodes = [w for w in words if w not in ("|", "Q", "R")]
    rng = random.Random(seed)
    out = [{"question": " ".join(words), "steps": [" ".join(words)], "answer": words[-1]}]
    while len(out) <= count:
        keys = rng.sample(nodes, rng.randint(15, 40))
        value = {k: rng.choice(nodes) for k in keys}
        start = cur = rng.choice(keys)
        path = []
        for _ in range(rng.randint(1, 5)):
            if cur not in value:
                break
            cur = value[cur]
            path.append(cur)
        pairs = [f"{k} {value[k]}" for k in keys]
        rng.shuffle(pairs)
        out.append({"question": " | ".join(pairs) + " R " + start, "steps": path, "answer": path[-1]})
    json.dump(out, open(dst, "w"))
    print(f"{len(out)} items -> {dst}")


def lookup_items(tokenizer_file, count, dst, seed, queries, lo, hi):
    words = vocabulary(tokenizer_file)
    nodes = [w for w in words if w not in ("|", "Q", "R")]
    rng = random.Random(seed)
    out = [{"question": " ".join(words), "steps": [" ".join(words)], "answer": words[-1]}]
    while len(out) <= count:
        keys = rng.sample(nodes, rng.randint(lo, hi))
        value = {k: rng.choice(nodes) for k in keys}
        pairs = [f"{k} {value[k]}" for k in keys]
        rng.shuffle(pairs)
        asked = [rng.choice(keys) for _ in range(queries)]
        out.append({"question": " | ".join(pairs), "steps": [f"{k} {value[k]}" for k in asked],
                    "answer": value[asked[-1]]})
    json.dump(out, open(dst, "w"))
    print(f"{len(out)} items over {len(nodes)} nodes -> {dst}")


def lookup_score(items_file, report_file):
    items = json.load(open(items_file))
    ok = total = keyed = keyed_ok = 0
    for r in json.load(open(report_file))["items"]:
        pairs = {tuple(p.split()) for p in items[r["index"]]["question"].split(" | ")}
        keys = {p[0] for p in pairs if len(p) == 2}
        for line in r["generated"].split("\n"):
            w = tuple(line.split())
            if len(w) != 2 or line.startswith("#"):
                continue
            total += 1
            ok += w in pairs
            if w[0] in keys:
                keyed += 1
                keyed_ok += w in pairs
    print(f"generated pairs in the question: {ok}/{total} = {100 * ok / max(1, total):.1f}%; of those whose key is "
          f"in the question: {keyed_ok}/{keyed} = {100 * keyed_ok / max(1, keyed):.1f}%")


def prontoqa_edge(sentence):
    """A ProntoQA rule or fact as an edge: "Every dumpus is an impus." -> "dumpus impus",
    "Zumpuses are not snowy." -> "zumpus not snowy", "Max is a dumpus." -> "Max dumpus"."""
    m = (re.fullmatch(r"(?:Every|Each) (\w+) is (not )?(?:an? )?(\w+)\.", sentence)
         or re.fullmatch(r"(\w+) are (not )?(\w+)\.", sentence)
         or re.fullmatch(r"(\w+) is (not )?(?:an? )?(\w+)\.", sentence))
    if not m:
        sys.exit(f"prontoqa-form: unexpected sentence {sentence!r}")
    singular = lambda w: w.lower()[:-2] if w.lower().endswith("uses") else w
    subject = m.group(1) if re.fullmatch(r"[A-Z][a-z]+", m.group(1)) and not m.group(1).endswith("uses") \
        else singular(m.group(1)).lower()
    return f"{subject} {m.group(2) or ''}{singular(m.group(3))}"


def prontoqa_form(src, dst):
    out = []
    for x in json.load(open(src)):
        sentences = re.split(r"(?<=[.?])\s+", x["question"].strip())
        claim = re.fullmatch(r"True or false: (.*)", sentences[-1]).group(1)
        question = " | ".join(prontoqa_edge(s) for s in sentences[:-1]) + " Q " + prontoqa_edge(claim)
        steps = []  # "Max is a dumpus. Every dumpus is an impus." then "Max is an impus. Each impus ..."
        for k, step in enumerate(x["steps"]):
            parts = re.split(r"(?<=\.)\s+", step.strip())
            steps += [prontoqa_edge(p) for p in (parts if k == 0 else parts[1:])]
        out.append({"question": question, "steps": steps, "answer": x["answer"]})
    json.dump(out, open(dst, "w"), indent=0)
    print(f"{len(out)} items -> {dst}")


def prontoqa_score(items_file, report_file):
    items = json.load(open(items_file))
    report = json.load(open(report_file))["items"]
    facts_ok = total = exact = says_true = 0
    for r in report:
        x = items[r["index"]]
        facts = set(x["question"].split(" Q ")[0].split(" | "))
        lines = [l.strip() for l in r["generated"].split("\n") if l.strip() and not l.startswith("#")]
        total += len(lines)
        facts_ok += sum(line in facts for line in lines)
        exact += lines == x["steps"]
        says_true += r["prediction"] == "True"
    correct = sum(r["correct"] for r in report)
    print(f"accuracy {correct}/{len(report)} = {100 * correct / len(report):.1f}%; steps that are facts "
          f"{facts_ok}/{total} = {100 * facts_ok / max(1, total):.1f}%; chains equal to the reference {exact}; "
          f"says True {says_true}")


def prontoqa_last(src, dst):
    out = [{"question": x["question"], "steps": x["steps"][:-1], "answer": f"{x['steps'][-1]} # {x['answer']}"}
           for x in json.load(open(src))]
    json.dump(out, open(dst, "w"), indent=0)
    print(f"{len(out)} items -> {dst}")


def prontoqa_last_score(items_file, report_file):
    items = json.load(open(items_file))
    report = json.load(open(report_file))["items"]
    step_ok = both = 0
    for r in report:
        want = items[r["index"]]["answer"].split(" # ")[0]
        got = r["generated"].strip().removeprefix("###").split(" # ")[0].strip()
        step_ok += got == want
        both += got == want and r["correct"]
    correct = sum(r["correct"] for r in report)
    print(f"accuracy {correct}/{len(report)} = {100 * correct / len(report):.1f}%; property step equal to the "
          f"reference {step_ok}, of those answered right {both}")


def edge_steps(items_file, report_file):
    items = json.load(open(items_file))
    report = json.load(open(report_file))["items"]
    ok = total = exact = option = 0
    for r in report:
        x = items[r["index"]]
        edges_text, rest = x["question"].split(" Q ")
        options, subject = rest.split(" R ")
        edges = {tuple(e.split()) for e in edges_text.split(" | ")}
        lines = [l.strip() for l in r["generated"].split("\n") if l.strip() and not l.startswith("#")]
        cur = subject.strip()
        for line in lines:  # a node, or an edge "u v" (graph-form ... edges)
            words = line.split()
            edge = tuple(words) if len(words) == 2 else (cur, words[-1])
            total += 1
            ok += edge in edges
            cur = words[-1]
        exact += lines == x["steps"]
        option += r["prediction"] in options.split()
    correct = sum(r["correct"] for r in report)
    print(f"accuracy {correct}/{len(report)}; steps that are edges {ok}/{total} = {100 * ok / max(1, total):.1f}%; "
          f"chains equal to the reference {exact}; answers that are one of the two options {option}")


if __name__ == "__main__":
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "graph-form" and (len(args) == 2 or len(args) == 3 and args[2] == "edges"):
        graph_form(args[0], args[1], len(args) == 3)
    elif cmd == "copy" and len(args) in (4, 6):
        copy_items(args[0], int(args[1]), args[2], int(args[3]), *map(int, args[4:]))
    elif cmd == "recall" and len(args) == 4:
        recall_items(args[0], int(args[1]), args[2], int(args[3]))
    elif cmd == "lookup" and len(args) == 7:
        lookup_items(args[0], int(args[1]), args[2], *map(int, args[3:]))
    elif cmd == "lookup-score" and len(args) == 2:
        lookup_score(*args)
    elif cmd == "prontoqa-form" and len(args) == 2:
        prontoqa_form(*args)
    elif cmd == "prontoqa-score" and len(args) == 2:
        prontoqa_score(*args)
    elif cmd == "prontoqa-last" and len(args) == 2:
        prontoqa_last(*args)
    elif cmd == "prontoqa-last-score" and len(args) == 2:
        prontoqa_last_score(*args)
    elif cmd == "edge-steps" and len(args) == 2:
        edge_steps(*args)
    else:
        sys.exit(__doc__)
