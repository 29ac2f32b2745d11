#!/usr/bin/env python3
"""What the continuous thoughts of a ProntoQA edge-form or running-sum run hold (docs/results.md,
sessions 18 and 22): linear probes on the thoughts, fitted on training items and scored on test
items.

For a word-tokenizer Coconut run, reads RUN_DIR/model with transformers and, for each item,
runs the prompt of DESIGN.md 2.4 (question "\\n" <bot> <latent>*K <eot>) in PyTorch: each
thought is the last hidden state (after ln_f) of the position before it, times
model.thought_scale, fed back as the next input embedding. It then decodes greedily after
<eot> and checks that the answers equal those of the run's own evaluation (RUN_DIR/
eval_valid.json on the same test items): the PyTorch replay is the model our trainer
evaluated. Thought k (k = 1..K) is the input row of latent slot k; "after K" is the hidden
state at the last latent slot, which no input receives.

Probes (multinomial logistic regression, fitted with L-BFGS on the first --fit training
items, scored on the test items): from each thought, (a) the concept the reference chain
reaches after the step the thought stands for (thought k for step k, or ceil(k / c) with c
thoughts a step) (the last word of step k, "Wren impus" -> impus; the property step
gives "[not] P"; with --task running_sum, the partial sum step k ends with, "8 + 2 = 0" -> 0),
and (b) the answer (True/False: the word after the last "#", so that
prontoqa-last items, whose answer is "vumpus not loud # True", work too); the majority class of the test items is
the floor each probe is compared against.

  usage: tools/thought_probe.py RUN_DIR TRAIN_ITEMS.json TEST_ITEMS.json [--fit 2000] [--thoughts K]
                                [--task prontoqa|running_sum]
"""
import argparse
import json
import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The word tokenizer's split (curriculum/word_tokenizer.cpp), as the PyTorch control has it.
from torch_cot_control import split as split_words  # noqa: E402


def load_vocab(run):
    """RUN_DIR/tokenizer.txt as {word: id}, the newline token as "\\n"."""
    lines = open(f"{run}/tokenizer.txt").read().splitlines()
    if not lines or lines[0] != "coconut-word-tokenizer v1":
        raise SystemExit(f"{run}/tokenizer.txt: not a word tokenizer's vocabulary")
    vocab = {}
    for line in lines[2:]:
        i, word = line.split(" ", 1)
        vocab["\n" if word == "\\n" else word] = int(i)
    return vocab


class Replay:
    def __init__(self, run):
        self.vocab = load_vocab(run)
        self.words = {i: w for w, i in self.vocab.items()}
        self.model = transformers.GPT2LMHeadModel.from_pretrained(f"{run}/model").eval()
        cfg = json.loads(open(f"{run}/config.yaml").read().split("\n", 1)[1])
        self.scale = cfg["model"].get("thought_scale", 1.0)
        cur = cfg["curriculum"]
        if cur["method"] not in ("coconut", "no_curriculum"):
            raise SystemExit(f"{run} is a {cur['method']} run: only coconut and no_curriculum feed thoughts back")
        self.c = max(1, cur["c_thought"])  # thoughts per step: thought k (0-based) stands for step k // c + 1
        self.default_thoughts = cur["max_latent_stage"] * cur["c_thought"]

    def ids(self, text):
        words = split_words(text)
        missing = [w for w in words if w not in self.vocab]
        if missing:
            raise SystemExit(f"words outside the run's vocabulary: {missing[:5]}")
        return [self.vocab[w] for w in words]

    @torch.no_grad()
    def run(self, questions, thoughts, max_new=40):
        """For questions of one token length, as a batch: returns (thought rows [B, K+1, C]:
        the K fed-back thoughts and the state after the last latent slot; the generated
        texts after <eot>)."""
        tr = self.model.transformer
        ids = torch.tensor([self.ids(q + "\n") + [self.vocab["<|start-latent|>"]] for q in questions])
        out = tr(input_ids=ids, use_cache=True)
        past, h = out.past_key_values, out.last_hidden_state[:, -1:]
        rows = []
        for _ in range(thoughts):
            rows.append(h[:, 0] * self.scale)
            out = tr(inputs_embeds=h * self.scale, past_key_values=past, use_cache=True)
            past, h = out.past_key_values, out.last_hidden_state[:, -1:]
        rows.append(h[:, 0])
        token = torch.full((len(questions), 1), self.vocab["<|end-latent|>"])
        eos = self.vocab["<|endoftext|>"]
        generated, done = [[] for _ in questions], [False] * len(questions)
        for _ in range(max_new):
            out = self.model(input_ids=token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            for i, t in enumerate(token[:, 0].tolist()):
                done[i] = done[i] or t == eos
                if not done[i]:
                    generated[i].append(self.words[t])
            if all(done):
                break
        return torch.stack(rows, 1), [" ".join(g) for g in generated]


def prediction(text):
    """The answer the evaluation reads: the words after the last '#'."""
    return text.rsplit("#", 1)[-1].strip() if "#" in text else text.strip()


def chain_labels(item, k, task):
    """The value the reference chain reaches at step k (1-based): ProntoQA's concept, a
    running sum's partial sum. Past the chain's end (more thoughts than steps, as with
    max_latent_stage above the step count), its last step's."""
    words = item["steps"][min(k, len(item["steps"])) - 1].split()
    if task == "running_sum":
        return words[-1]  # "8 + 2 = 0" -> "0"
    return " ".join(words[2:]) if len(words) > 2 else words[-1]  # "vumpus not loud" -> "not loud"


def probe(x_fit, y_fit, x_test, y_test):
    """Multinomial logistic regression (L2 1e-3) on standardised features; returns the
    test accuracy and the majority-class accuracy of the test labels."""
    classes = sorted(set(y_fit))
    index = {c: i for i, c in enumerate(classes)}
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-6
    xf, xt = (x_fit - mean) / std, (x_test - mean) / std
    yf = torch.tensor([index[y] for y in y_fit])
    w = torch.zeros(xf.shape[1], len(classes), requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xf @ w + b, yf) + 1e-3 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        guess = (xt @ w + b).argmax(1).tolist()
    right = sum(classes[g] == y for g, y in zip(guess, y_test))
    majority = max(y_test.count(c) for c in set(y_test))
    return right / len(y_test), majority / len(y_test)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("train_items")
    ap.add_argument("test_items")
    ap.add_argument("--fit", type=int, default=2000, help="training items the probes are fitted on")
    ap.add_argument("--thoughts", type=int, default=None, help="thoughts per prompt (default: the run's last stage)")
    ap.add_argument("--task", choices=["prontoqa", "running_sum"], default="prontoqa",
                    help="what a step's value is: ProntoQA's concept or a running sum's partial sum")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    replay = Replay(a.run)
    k_max = a.thoughts if a.thoughts is not None else replay.default_thoughts
    fit_items = json.load(open(a.train_items))[: a.fit]
    test_items = json.load(open(a.test_items))
    report = json.load(open(f"{a.run}/eval_valid.json"))["items"]
    if len(report) != len(test_items):
        raise SystemExit(f"{a.run}/eval_valid.json has {len(report)} items, {a.test_items} {len(test_items)}")

    def states(items):
        """Thought rows [N, K+1, C] and generated texts, in item order; items of one
        question length run as one batch (no padding, so positions are exact)."""
        groups = {}
        for i, it in enumerate(items):
            groups.setdefault(len(split_words(it["question"])), []).append(i)
        rows, texts = [None] * len(items), [None] * len(items)
        for members in groups.values():
            r, t = replay.run([items[i]["question"] for i in members], k_max)
            for j, i in enumerate(members):
                rows[i], texts[i] = r[j], t[j]
        return torch.stack(rows), texts

    x_fit, _ = states(fit_items)
    x_test, texts = states(test_items)
    same = sum(prediction(t) == r["prediction"] for t, r in zip(texts, report))
    right = sum(prediction(t) == prediction(it["answer"]) for t, it in zip(texts, test_items))
    print(f"{a.run}: {k_max} thoughts; replayed answers equal to the run's evaluation: {same}/{len(report)}; "
          f"right {right}/{len(test_items)} ({100 * right / len(test_items):.1f}%)")
    if same != len(report):
        raise SystemExit("the replay does not decode what the run's evaluation decoded: its probes would describe "
                         "another model")
    value = "partial sum" if a.task == "running_sum" else "concept"
    print(f"| thought | {value} after step k: probe (majority) | answer: probe (majority) |")
    print("|---|---|---|")
    for k in range(k_max + 1):
        name = f"{k + 1}" if k < k_max else f"after {k_max}"
        cells = []
        # With c thoughts a step, thought k (0-based) stands for step k // c + 1; the state
        # after the last slot is probed for the last thought's step.
        step = min(k, k_max - 1) // replay.c + 1
        acc, base = probe(x_fit[:, k], [chain_labels(it, step, a.task) for it in fit_items], x_test[:, k],
                          [chain_labels(it, step, a.task) for it in test_items])
        shown = min(step, max(len(it["steps"]) for it in test_items))
        cells.append(f"step {shown}: {100 * acc:.1f}% ({100 * base:.1f}%)")
        acc, base = probe(x_fit[:, k], [prediction(it["answer"]) for it in fit_items], x_test[:, k],
                          [prediction(it["answer"]) for it in test_items])
        cells.append(f"{100 * acc:.1f}% ({100 * base:.1f}%)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
