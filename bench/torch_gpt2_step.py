#!/usr/bin/env python3
"""PyTorch peer of coconut's GPT-2 step benchmark: the same model shape, batch and
optimizer (forward, shifted cross-entropy, backward, AdamW) with transformers'
GPT2LMHeadModel on the CPU, with the same thread count. Prints `torch_ms_per_step X`
(mean over the timed steps) for bench/gpt2_step.cpp to read."""
import argparse
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    p = argparse.ArgumentParser()
    for name in ["layers", "d-model", "heads", "vocab", "positions", "batch", "seq-len", "steps", "warmup", "threads"]:
        p.add_argument("--" + name, type=int, required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=a.vocab, n_positions=a.positions, n_embd=a.d_model, n_layer=a.layers,
                     n_head=a.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq_len))
    total = 0.0
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            total += dt
    print(f"torch_version {torch.__version__}")
    print(f"torch_attention {model.config._attn_implementation}")
    print(f"torch_ms_per_step {1e3 * total / a.steps:.3f}", flush=True)


if __name__ == "__main__":
    main()
