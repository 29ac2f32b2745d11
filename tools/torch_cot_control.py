#!/usr/bin/env python3
"""A PyTorch control for the reproduction (issue #8, docs/results.md): trains the CoT
baseline of configs/reproduce_*.yaml with Hugging Face transformers instead of coconut,
on the same data files, and evaluates it the same way, so that "the small model does not
learn the task" can be told apart from "our trainer does not learn it".

Independent of our code on purpose: its own word splitter, sample layout, batching, data
order, initialisation (transformers' GPT-2 init), AdamW (torch.optim.AdamW) and greedy
decoding. What it shares with our runs is the task and the settings: the sample text
"question\\n step\\n ... ### answer<eos>" with the loss on everything after the question
(DESIGN.md 2.1, method cot), the model shape, batch size, learning rate, weight decay,
epochs, and the loss as the mean over the batch's targets.

    python3 tools/torch_cot_control.py --train runs/reproduce/data/prontoqa_train_9000.json \\
        --test runs/reproduce/data/prontoqa_test.json --out runs/control/prontoqa_cot

writes OUT/eval_valid.json (the fields tools/reproduce_table.py reads from our runs:
accuracy, items with generated text and prediction) and OUT/metrics.jsonl (one line per
epoch: mean loss, seconds), and prints a summary with the rules-copied share that
docs/results.md reports for our runs. Not run in CI (minutes to an hour on 2 cores).
"""
import argparse
import inspect
import json
import math
import os
import random
import re
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reproduce_table import rule_sentences  # noqa: E402  (the rules counter of our tables)

EOS = "<|endoftext|>"
TOKEN = re.compile(r"\n|[.,?:;!'\"()#]|[^\s.,?:;!'\"()#]+")


def split(text):
    return TOKEN.findall(text)


def join(tokens):
    """Text from tokens: a space between words, none before punctuation or after a newline."""
    out = ""
    for t in tokens:
        if out and not out.endswith("\n") and t not in ".,?:;!)\n'" and not out.endswith(("(", "'")):
            out += " "
        out += t
    return out


class Vocab:
    def __init__(self, texts):
        words = sorted({w for t in texts for w in split(t)})
        self.itos = [EOS, "<unk>"] + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def encode(self, text):
        return [self.stoi.get(w, 1) for w in split(text)]


def sample_ids(vocab, item):
    """(question ids, target ids): question + "\\n"; then the steps, "### answer", <eos>."""
    q = vocab.encode(item["question"] + "\n")
    rest = []
    for step in item["steps"]:
        rest += vocab.encode(step + "\n")
    rest += vocab.encode("### " + item["answer"]) + [0]
    return q, rest


def make_batch(samples):
    """Right-padded inputs and labels (-100 on the question and the padding)."""
    T = max(len(q) + len(r) for q, r in samples)
    ids = torch.zeros(len(samples), T, dtype=torch.long)
    labels = torch.full((len(samples), T), -100, dtype=torch.long)
    mask = torch.zeros(len(samples), T, dtype=torch.long)
    for b, (q, r) in enumerate(samples):
        seq = q + r
        ids[b, :len(seq)] = torch.tensor(seq)
        labels[b, len(q):len(seq)] = torch.tensor(r)
        mask[b, :len(seq)] = 1
    return ids, labels, mask


def train(model, data, args, out_dir):
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999),
                            eps=1e-8)
    rng = random.Random(args.seed)
    start = time.time()
    with open(os.path.join(out_dir, "metrics.jsonl"), "w") as metrics:
        for epoch in range(args.epochs):
            order = list(range(len(data)))
            rng.shuffle(order)
            total, steps = 0.0, 0
            model.train()
            for i in range(0, len(order), args.batch):
                ids, labels, mask = make_batch([data[j] for j in order[i:i + args.batch]])
                logits = model(input_ids=ids, attention_mask=mask).logits
                # Mean over the batch's targets (our trainer's loss; HF shifts the same way).
                loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                         labels[:, 1:].reshape(-1), ignore_index=-100)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
                steps += 1
            row = {"epoch": epoch, "loss": total / steps, "steps": steps, "seconds": time.time() - start}
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            print(f"epoch {epoch}: loss {row['loss']:.4f} ({steps} steps, {row['seconds']:.0f} s)", flush=True)
            if args.max_minutes and time.time() - start > 60 * args.max_minutes:
                print(f"--max-minutes {args.max_minutes} reached after epoch {epoch}", flush=True)
                break
    return time.time() - start


@torch.no_grad()
def generate(model, prompts, max_new, eos):
    """Greedy decoding of a batch of prompts, left-padded, positions counted from each
    prompt's first token, with the KV cache; stops a row at <eos>."""
    model.eval()
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros(B, P, dtype=torch.long)
    mask = torch.zeros(B, P, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):] = torch.tensor(p)
        mask[b, P - len(p):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    # transformers 5 renamed past_key_values to cache.
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    past, done = getattr(out, key), torch.zeros(B, dtype=torch.bool)
    next_pos = pos[:, -1] + 1
    result = [[] for _ in range(B)]
    nxt = out.logits[:, -1].argmax(-1)
    for _ in range(max_new):
        for b in range(B):
            if not done[b]:
                result[b].append(int(nxt[b]))
        done |= nxt == eos
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.long)], 1)
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos[:, None], use_cache=True,
                    **{key: past})
        past, next_pos = getattr(out, key), next_pos + 1
        nxt = out.logits[:, -1].argmax(-1)
    return result


def evaluate(model, vocab, test, args):
    items = []
    for i in range(0, len(test), args.eval_batch):
        chunk = test[i:i + args.eval_batch]
        gens = generate(model, [sample_ids(vocab, it)[0] for it in chunk], args.max_new_tokens, 0)
        for k, (it, g) in enumerate(zip(chunk, gens)):
            words = [vocab.itos[t] for t in g if t != 0]
            text = join(words)
            # The answer is what follows the last "###" (as our evaluation reads it).
            pred = join(words[len(words) - words[::-1].index("#") :]) if "#" in words else ""
            pred = pred.strip()
            items.append({"index": i + k, "generated": text, "prediction": pred, "reference": it["answer"],
                          "correct": pred == it["answer"]})
    correct = sum(it["correct"] for it in items)
    return {"accuracy": correct / len(items), "correct": correct, "total": len(items), "items": items}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-items", type=int, default=0, help="the first N training items (0: all)")
    ap.add_argument("--eval-items", type=int, default=0, help="the first N test items (0: all)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop after the epoch that passes it (0: never)")
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    train_items = json.load(open(args.train))
    test_items = json.load(open(args.test))
    if args.train_items:
        train_items = train_items[:args.train_items]
    if args.eval_items:
        test_items = test_items[:args.eval_items]
    texts = [it["question"] + "\n" + "\n".join(it["steps"]) + "\n### " + it["answer"] for it in train_items]
    vocab = Vocab(texts)
    data = [sample_ids(vocab, it) for it in train_items]
    longest = max(len(q) + len(r) for q, r in data)
    cfg = GPT2Config(vocab_size=len(vocab.itos), n_positions=max(512, longest), n_embd=args.d_model,
                     n_layer=args.layers, n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    params = sum(p.numel() for p in model.parameters())
    print(f"control: transformers GPT-2, {args.layers} layers, d_model {args.d_model}, {args.heads} heads, "
          f"vocab {len(vocab.itos)}, {params / 1e6:.2f}M parameters; {len(data)} training items (longest "
          f"{longest} tokens), batch {args.batch}, lr {args.lr}, {args.epochs} epochs, torch {torch.__version__}, "
          f"{args.threads} threads", flush=True)
    seconds = train(model, data, args, args.out)
    ev = evaluate(model, vocab, test_items, args)
    ev.update(dataset=os.path.basename(args.test), train_seconds=seconds, parameters=params)
    json.dump(ev, open(os.path.join(args.out, "eval_valid.json"), "w"), indent=1)
    rules = [(sum(r in test_items[it["index"]]["question"] for r in rule_sentences(it["generated"].split("###")[0])),
              len(rule_sentences(it["generated"].split("###")[0]))) for it in ev["items"]]
    stated, total = sum(r[0] for r in rules), sum(r[1] for r in rules)
    exact = sum(it["generated"].split("\n###")[0].strip() == "\n".join(test_items[it["index"]]["steps"]).strip()
                for it in ev["items"])
    says_true = sum(it["prediction"] == "True" for it in ev["items"])
    print(f"accuracy {100 * ev['accuracy']:.1f} ({ev['correct']}/{ev['total']}); answers True: {says_true}; "
          f"CoT rules stated in the question: {100 * stated / max(total, 1):.1f} ({stated}/{total}); "
          f"chains equal to the reference: {exact}/{ev['total']}; training {seconds:.0f} s")


if __name__ == "__main__":
    main()
