#!/usr/bin/env python3
"""PyTorch peer of `coconut bench coconut`: one Coconut training step (every pass of the
latent recurrence with a KV cache, thoughts fed back, loss, backpropagation through all
passes, AdamW) on exactly the batch and pass plan that the C++ benchmark ran, read from
the JSON file it writes. Same model and initial weights (loaded from the directory the C++ side
exported), same thread count, dropout 0.

The peer is written to be fast rather than to mirror the official code line by line:
transformers' GPT2Model for the passes (eager attention, KV cache), the tied LM head
only on the targeted rows, and the fed-back thoughts inserted with torch.where (the
official implementation rebuilds the embedding tensor from Python lists, which is
slower). After its warm-up it prints `ready FIRST_LOSS TORCH_VERSION`, then times one
step for each line `step` on stdin and answers `ms X`, so that the C++ side alternates
its steps with these (both see the same moments of a shared machine); EOF ends it.
"""
import argparse
import inspect
import json
import sys
import time

import torch
from transformers import GPT2LMHeadModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-file", required=True)
    p.add_argument("--weights", required=True, help="Hugging Face GPT-2 directory with the C++ side's initial weights")
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(a.batch_file) as f:
        spec = json.load(f)
    m = spec["model"]
    B, T = spec["B"], spec["T"]
    model = GPT2LMHeadModel.from_pretrained(a.weights, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                            attn_implementation="eager").transformer.train()
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.vocab_size) == (m["n_layer"], m["n_head"], m["d_model"], m["vocab_size"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    # The C++ batch is time-major (row t*B+s); the model wants [B, T].
    def grid(name, dtype):
        return torch.tensor(spec[name], dtype=dtype).view(T, B).t().contiguous()

    tokens, targets = grid("tokens", torch.int64), grid("targets", torch.int64)
    pos, mask = grid("pos_ids", torch.int64), grid("key_mask", torch.int64)
    passes = spec["passes"]
    target_s, target_t = (targets >= 0).nonzero(as_tuple=True)
    target_ids = targets[target_s, target_t]

    def step():
        opt.zero_grad(set_to_none=True)
        embeds = model.wte(tokens)
        hidden = []  # per pass: [B, cols, C] final-norm states
        thought = {}  # (sample, column) -> fed-back state for a later pass
        cache = None
        for ps in passes:
            a, b = ps["begin"], ps["end"]
            x = embeds[:, a:b]
            if thought:
                # Replace the thought positions of this pass out of place (autograd sees it).
                s_idx = torch.tensor([s for s, _ in thought])
                c_idx = torch.tensor([col - a for _, col in thought])
                sel = torch.zeros(B, b - a, 1, dtype=torch.bool)
                sel[s_idx, c_idx] = True
                vals = torch.zeros(B, b - a, x.shape[-1]).index_put((s_idx, c_idx), torch.stack(list(thought.values())))
                x = torch.where(sel, vals, x)
                thought = {}
            kwargs = {"inputs_embeds": x, "attention_mask": mask[:, :b], "position_ids": pos[:, a:b],
                      "use_cache": True}
            if cache is not None:
                kwargs[cache_kw] = cache
            out = model(**kwargs)
            cache = out.past_key_values if getattr(out, "past_key_values", None) is not None else out.cache
            hidden.append(out.last_hidden_state)
            for fb in ps["feedback"]:
                s, frm = fb["sample"], fb["from"]
                thought[(s, frm + 1)] = out.last_hidden_state[s, frm - a]
        h = torch.cat(hidden, dim=1)
        logits = h[target_s, target_t] @ model.wte.weight.t()  # tied head on the targeted rows
        loss = torch.nn.functional.cross_entropy(logits, target_ids)
        loss.backward()
        opt.step()
        return loss.item()

    # Warm-up, then one timed step per "step" line on stdin, so that the C++ side can
    # alternate its steps with ours: both see the same state of a shared machine.
    first_loss = step()
    for _ in range(a.warmup - 1):
        step()
    print(f"ready {first_loss:.6f} {torch.__version__}", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0 = time.perf_counter()
        step()
        print(f"ms {1e3 * (time.perf_counter() - t0):.3f}", flush=True)

if __name__ == "__main__":
    main()
