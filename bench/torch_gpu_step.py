#!/usr/bin/env python3
"""PyTorch peer of bench/gpu_train.cpp: the same Coconut training step on the same GPU.
transformers' GPT2LMHeadModel with the model shape and batch of the C++ benchmark:
a question pass over [0, f) with a KV cache, one single-column pass per further thought
(the last final-norm hidden state fed back as the next input embedding, nothing
detached), the final pass over [f + n - 1, T), cross-entropy on the answer columns,
backward through every thought, AdamW. Timed for --seconds in fp32 (TF32 off, like the
C++ fp32 path) and again under bf16 autocast. Prints
`torch_ms_per_step fp32 X` and `torch_ms_per_step bf16 X` for gpu_train.cpp to read."""
import argparse
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel


def coconut_loss(model, ids, f, n):
    tr = model.transformer
    B, T = ids.shape
    emb = tr.wte(ids)
    pos = torch.arange(T, device=ids.device).unsqueeze(0).expand(B, T)
    if n == 0:  # no thoughts: one pass over the whole sequence, targets as below
        h = tr(inputs_embeds=emb, position_ids=pos).last_hidden_state
        logits = model.lm_head(h[:, f:T - 1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, f + 1:].reshape(-1))
    out = tr(inputs_embeds=emb[:, :f], position_ids=pos[:, :f], use_cache=True)
    hidden, past = [out.last_hidden_state], out.past_key_values
    thought = out.last_hidden_state[:, -1:]  # feeds column f
    for i in range(1, n):  # pass i runs column f + i - 1 (a thought) and feeds column f + i
        out = tr(inputs_embeds=thought, position_ids=pos[:, f + i - 1:f + i], past_key_values=past, use_cache=True)
        hidden.append(out.last_hidden_state)
        past, thought = out.past_key_values, out.last_hidden_state
    final_in = torch.cat([thought, emb[:, f + n:]], dim=1)  # column f + n - 1 is the last thought
    out = tr(inputs_embeds=final_in, position_ids=pos[:, f + n - 1:], past_key_values=past, use_cache=True)
    hidden.append(out.last_hidden_state)
    h = torch.cat(hidden, dim=1)
    # Targets: the next token on the answer columns [f + n, T - 1), as the C++ batch.
    logits = model.lm_head(h[:, f + n:T - 1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, f + n + 1:].reshape(-1))


def time_steps(model, opt, ids, f, n, seconds, bf16):
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = coconut_loss(model, ids, f, n)
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):  # warm-up
        step()
    torch.cuda.synchronize()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loss = step()
        torch.cuda.synchronize()
        steps += 1
    return 1e3 * (time.perf_counter() - t0) / steps, steps, loss.item()


def main():
    p = argparse.ArgumentParser()
    for name in ["layers", "d-model", "heads", "vocab", "positions", "batch", "seq-len", "question", "latents"]:
        p.add_argument("--" + name, type=int, required=True)
    p.add_argument("--seconds", type=float, default=40)
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("torch_gpu_step.py: torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=a.vocab, n_positions=a.positions, n_embd=a.d_model, n_layer=a.layers,
                     n_head=a.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq_len), device="cuda")
    print(f"torch_version {torch.__version__} on {torch.cuda.get_device_name()}, "
          f"attention {model.config._attn_implementation}", flush=True)
    for name, bf16 in (("fp32", False), ("bf16", True)):
        ms, steps, loss = time_steps(model, opt, ids, a.question, a.latents, a.seconds, bf16)
        print(f"torch_ms_per_step {name} {ms:.3f} ({steps} steps, last loss {loss:.4f})", flush=True)


if __name__ == "__main__":
    main()
