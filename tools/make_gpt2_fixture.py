#!/usr/bin/env python3
"""Builds the tiny GPT-2 reference fixture in tests/fixtures/gpt2_tiny/ with PyTorch and
Hugging Face transformers, the independent reference our C++ model is checked against.

Writes:
  model.safetensors, config.json  a small random GPT2LMHeadModel (save_pretrained)
  reference.safetensors           one batch through it: inputs, logits, loss, every
                                  parameter gradient, and the losses of 10 AdamW steps
                                  (without and with gradient clipping)
  dtypes.safetensors              F16 / BF16 / I32 / I64 tensors written by the
                                  safetensors package, with torch's float32 values of
                                  the same numbers, for the reader's conversion tests
  README.md                       how it was made, with the library versions

Not run in CI: run it by hand (python3 tools/make_gpt2_fixture.py) after changing it,
and commit the regenerated files.
"""
import argparse
import copy
import json
import os
import platform

import numpy as np
import safetensors
import safetensors.torch
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

SEED = 1234
VOCAB, N_POSITIONS, N_LAYER, N_HEAD, N_EMBD = 97, 64, 2, 4, 64
B, T = 2, 32
# Positions whose label is ignored (-100), to exercise masking: a "question" prefix in
# sequence 0 and scattered positions in sequence 1.
IGNORED = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 10), (1, 20), (1, 21), (1, 22), (1, 31)]
LR, BETAS, EPS, WEIGHT_DECAY, STEPS, CLIP = 1e-3, (0.9, 0.999), 1e-8, 0.01, 10, 1.0
HF_PREFIX = "transformer."


def build_model():
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=N_POSITIONS, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        layer_norm_epsilon=1e-5, activation_function="gelu_new", tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None)  # the random vocab has no special tokens
    model = GPT2LMHeadModel._from_config(config, attn_implementation="eager", dtype=torch.float32)
    # HF initialises biases to 0 and LayerNorm weights to 1, which would hide a bias or a
    # LayerNorm scale applied wrongly; perturb them so every parameter matters.
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif ".ln_" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    model.eval()  # no dropout anyway; eval() makes that explicit
    return model


def our_name(hf_name):
    assert hf_name.startswith(HF_PREFIX), hf_name
    return hf_name[len(HF_PREFIX):]


def train_losses(model0, input_ids, labels, clip):
    """Loss before each of STEPS AdamW steps on the same batch (and the pre-clip norms)."""
    model = copy.deepcopy(model0)
    assert model.lm_head.weight is model.transformer.wte.weight, "deepcopy untied the head"
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=input_ids, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        if clip is not None:
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), clip).item())
        opt.step()
    return torch.tensor(losses, dtype=torch.float32), torch.tensor(norms, dtype=torch.float32)


def write_dtypes_fixture(out_dir):
    # Values chosen to hit every conversion path: normal, subnormal, signed zero,
    # infinities, NaN, largest finite, and values that round when narrowed.
    values = [0.0, -0.0, 1.0, -2.5, 0.1, 3.14159265, 65504.0, -65504.0, 6.1e-5, 5.96e-8, 1e-6,
              float("inf"), float("-inf"), float("nan"), 1e30, -7.0e-39]
    f = torch.tensor(values, dtype=torch.float32)
    f16 = f.to(torch.float16)
    bf16 = f.to(torch.bfloat16)
    tensors = {
        "f16": f16.reshape(2, 8).contiguous(),
        "f16_as_f32": f16.to(torch.float32).reshape(2, 8).contiguous(),
        "bf16": bf16.reshape(4, 4).contiguous(),
        "bf16_as_f32": bf16.to(torch.float32).reshape(4, 4).contiguous(),
        "i32": torch.tensor([[0, -1, 2147483647], [-2147483648, 42, 7]], dtype=torch.int32),
        "i64": torch.tensor([0, -1, 9223372036854775807, -9223372036854775808, 1 << 40], dtype=torch.int64),
        "scalar_f32": torch.tensor(2.75, dtype=torch.float32),
        "empty_f32": torch.zeros(0, 3, dtype=torch.float32),
    }
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "dtypes.safetensors"),
                                metadata={"made_by": "tools/make_gpt2_fixture.py"})


def main():
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gpt2_tiny")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=default_out)
    args = parser.parse_args()
    out_dir = os.path.normpath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    model = build_model()
    model.save_pretrained(out_dir, safe_serialization=True)

    gen = torch.Generator().manual_seed(SEED + 2)
    input_ids = torch.randint(0, VOCAB, (B, T), generator=gen, dtype=torch.int64)
    labels = input_ids.clone()
    for b, t in IGNORED:
        labels[b, t] = -100

    # Forward/backward once: HF shifts labels internally (logits[:, t] predicts labels[:, t+1])
    # and averages the cross-entropy over labelled positions.
    ref = copy.deepcopy(model)
    out = ref(input_ids=input_ids, labels=labels)
    out.loss.backward()
    tensors = {
        "input_ids": input_ids,
        "labels": labels,
        "logits": out.logits.detach().float().contiguous(),
        "loss": out.loss.detach().float().reshape(1),
    }
    # named_parameters lists the tied wte once; its .grad already holds the LM head's
    # contribution because both modules share the one tensor.
    for name, p in ref.named_parameters():
        tensors["grad." + our_name(name)] = p.grad.detach().float().contiguous()

    # Checksums of the saved weights computed by torch, so the C++ import is checked
    # against something other than our own safetensors reader.
    for name, p in model.named_parameters():
        x = p.detach().double()
        tensors["checksum." + our_name(name)] = torch.tensor([x.sum(), (x * x).sum()], dtype=torch.float32)

    tensors["adamw_losses"], _ = train_losses(model, input_ids, labels, clip=None)
    tensors["adamw_clip_losses"], tensors["adamw_clip_grad_norms"] = train_losses(model, input_ids, labels, clip=CLIP)

    settings = {
        "made_by": "tools/make_gpt2_fixture.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "safetensors": safetensors.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "seed": SEED, "model": {"vocab_size": VOCAB, "n_positions": N_POSITIONS, "n_layer": N_LAYER,
                                                "n_head": N_HEAD, "n_embd": N_EMBD, "dropout": 0.0,
                                                "layer_norm_epsilon": 1e-5, "activation": "gelu_new",
                                                "attn_implementation": "eager", "dtype": "float32",
                                                "tied_lm_head": True},
        "init": "HF init (std 0.02), then biases ~ 0.02*N(0,1) and LayerNorm weights ~ 1+0.1*N(0,1)",
        "batch": f"B={B} T={T}, input_ids uniform in [0, {VOCAB}), labels = input_ids with -100 at (b,t) {IGNORED}",
        "loss": "HF causal LM loss: mean cross-entropy of logits[:, :-1] vs labels[:, 1:] over labels != -100",
        "checksums": "checksum.<name> = [sum, sum of squares] of the parameter, float64 then float32",
        "grads": "grad.<name>: d loss / d parameter after one backward; grad.wte.weight includes the tied LM head",
        "adamw": {"optimizer": "torch.optim.AdamW", "lr": LR, "betas": list(BETAS), "eps": EPS,
                             "weight_decay": WEIGHT_DECAY, "weight_decay_on": "all parameters", "steps": STEPS,
                             "batch": "the same batch every step", "recorded": "loss before each step"},
        "adamw_clip": f"same as adamw, with torch.nn.utils.clip_grad_norm_(params, {CLIP}) before each step; "
                      "adamw_clip_grad_norms = the total norms it returned (before clipping)",
    }
    # One metadata key: the package writes several keys in a random order, which would
    # make every regeneration a different file.
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "reference.safetensors"),
                                metadata={"settings": json.dumps(settings, sort_keys=True)})
    write_dtypes_fixture(out_dir)
    write_readme(out_dir, settings, tensors)
    print(f"wrote {out_dir}: loss {tensors['loss'].item():.6f}, adamw losses {tensors['adamw_losses'].tolist()}")


def write_readme(out_dir, settings, tensors):
    rows = "\n".join(f"| `{name}` | {str(t.dtype).replace('torch.', '')} | {list(t.shape)} |"
                     for name, t in tensors.items() if not name.startswith(("grad.", "checksum.")))
    text = f"""# gpt2_tiny: independent GPT-2 reference (PyTorch + Hugging Face transformers)

Generated by `python3 tools/make_gpt2_fixture.py` (not run in CI; rerun by hand and commit
the outputs). Made with torch {settings['torch']}, transformers {settings['transformers']},
safetensors {settings['safetensors']}, numpy {settings['numpy']}, Python {settings['python']}, on the CPU.

## Files

- `config.json`, `model.safetensors`: `GPT2LMHeadModel.save_pretrained` of a random model:
  vocab {VOCAB}, n_positions {N_POSITIONS}, n_layer {N_LAYER}, n_head {N_HEAD}, n_embd {N_EMBD},
  all dropout 0, layer_norm_epsilon 1e-5, gelu_new, eager attention, float32, tied LM head
  (so `lm_head.weight` is not stored). Seed {SEED}. HF initialisation, then every bias set
  to 0.02*N(0,1) and every LayerNorm weight to 1+0.1*N(0,1), so a wrongly applied bias or
  LayerNorm scale changes the outputs.
- `reference.safetensors`: one batch through that model (settings also in its `__metadata__`,
  key `settings`, as JSON).
- `dtypes.safetensors`: F16, BF16, I32, I64, a scalar and an empty tensor written by the
  `safetensors` package; `f16_as_f32` / `bf16_as_f32` are torch's float32 values of
  `f16` / `bf16` (includes subnormals, +-0, +-inf, NaN, 65504).

## reference.safetensors

| name | dtype | shape |
|---|---|---|
{rows}
| `grad.<name>` | float32 | shape of parameter `<name>` |
| `checksum.<name>` | float32 | [2] |

- `input_ids`: uniform random tokens in [0, {VOCAB}); `labels`: `input_ids` with -100 at
  (b, t) in {IGNORED}.
- `logits`: `model(input_ids).logits`. `loss`: HF's causal LM loss, the mean cross-entropy
  of `logits[:, t]` against `labels[:, t+1]` over positions whose label is not -100.
- `grad.<name>`: gradient of `loss` for every parameter, named as in our ParamLayout (HF
  names without `transformer.`). `grad.wte.weight` includes the tied LM head's part.
- `checksum.<name>`: [sum, sum of squares] of parameter `<name>` of `model.safetensors`,
  computed by torch in float64 (checks the C++ import independently of our reader).
- `adamw_losses`: loss before each of {STEPS} `torch.optim.AdamW` steps (lr {LR}, betas {BETAS},
  eps {EPS}, weight_decay {WEIGHT_DECAY} on all parameters, no clipping) on this same batch,
  starting from `model.safetensors`.
- `adamw_clip_losses`: the same with `clip_grad_norm_(parameters, {CLIP})` before each step;
  `adamw_clip_grad_norms`: the total gradient norm it returned (before clipping) per step.
"""
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
