#!/usr/bin/env python3
"""How long a continuous thought is next to the token embeddings it replaces (session 17 of
docs/results.md). For a word-tokenizer run, reads RUN_DIR/model with transformers and runs
the first N items of ITEMS.json (question and reference steps, one word a token, as the
word tokenizer splits them) through it, printing the mean Euclidean norm of each row of the
residual stream: the input (token + position embeddings), after each block, and the last
hidden state (after ln_f), which is what Coconut feeds back as a thought.

  usage: tools/thought_norms.py RUN_DIR ITEMS.json [N=20]
"""
import json
import sys

import torch
import transformers

from thought_probe import load_vocab  # the same directory: tools/


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    run, items_file = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) == 4 else 20
    vocab = load_vocab(run)
    model = transformers.GPT2LMHeadModel.from_pretrained(f"{run}/model")
    model.eval()
    items = json.load(open(items_file))[:n]
    sums = None
    for x in items:
        words = (x["question"] + " \n " + " \n ".join(x["steps"])).split()
        missing = [w for w in words if w not in vocab]
        if missing:
            sys.exit(f"{items_file}: words outside the run's vocabulary: {missing[:5]}")
        ids = torch.tensor([[vocab[w] for w in words]])
        with torch.no_grad():
            states = model(ids, output_hidden_states=True).hidden_states
        norms = [h[0].norm(dim=-1).mean().item() for h in states]
        sums = norms if sums is None else [a + b for a, b in zip(sums, norms)]
    means = [s / len(items) for s in sums]
    wte = model.transformer.wte.weight.norm(dim=-1).mean().item()
    print(f"{run}: {len(items)} items; mean row norms: token embedding {wte:.2f}, input {means[0]:.2f}, "
          + ", ".join(f"after block {i} {v:.2f}" for i, v in enumerate(means[1:-1]))
          + f", last hidden state (after ln_f, the thought) {means[-1]:.2f}; thought / input {means[-1] / means[0]:.2f}")


if __name__ == "__main__":
    main()
