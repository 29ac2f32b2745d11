#!/usr/bin/env python3
"""Builds the Coconut multi-pass reference fixture in tests/fixtures/coconut_multipass/ with
PyTorch and Hugging Face transformers: one batch of three samples with 3, 1 and 0 continuous
thoughts through the tiny GPT-2 of tests/fixtures/gpt2_tiny/, its loss and every parameter
gradient (backpropagation through every fed-back hidden state and every cached key/value).

The forward mirrors the official reference (facebookresearch/coconut, coconut.py,
Coconut.forward) and its batch collator (dataset.py, MyCollator): pass 0 runs up to the
earliest <latent>, each latent pass one column with the KV cache of the earlier ones, the
final pass the rest; after pass i the i-th <latent> of every sample that has one gets the
last-layer hidden state (after ln_f) of the column before it as its input embedding. The
code here is written from that description (DESIGN.md 2.2), not copied. The golden values
are computed in float64 from the float32 weights, so the C++ test measures its own float32
error only; the README records how far HF's float32 run is from them.

Before writing anything the script checks its own forward three ways:
  1. a batch without latents: the multi-pass forward is one pass and equals HF's own loss;
  2. the latent batch with the feedback switched off: the passes over the KV cache give the
     loss and gradients of one ordinary forward over the whole batch;
  3. the latent batch with feedback, recomputed without a KV cache (n+1 full forwards, the
     thoughts filled in one by one): same loss and gradients as the cached passes.

Not run in CI: run it by hand (python3 tools/make_coconut_fixture.py) after changing it,
and commit the regenerated files.
"""
import argparse
import copy
import inspect
import json
import os
import platform

import numpy as np
import safetensors
import safetensors.torch
import torch
import transformers
from transformers import GPT2LMHeadModel

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.path.join(HERE, "..", "tests", "fixtures", "gpt2_tiny")
SEED = 4321
HF_PREFIX = "transformer."
# Special tokens among the tiny model's 97 ids; EOS doubles as the pad token (GPT-2 style).
EOS, BOT, EOT, LATENT = 93, 94, 95, 96
TEXT_VOCAB = 93  # ordinary tokens are drawn from [0, 93)
# (question length, latent count, length of the rest: remaining steps + answer, without <eos>)
SAMPLES = [(6, 3, 4), (8, 1, 5), (5, 0, 6)]
# The tolerance of tests/model/test_multipass_reference.cpp, to report HF float32's own error.
TEST_REL, TEST_FLOOR = 1e-5, 1e-1


def our_name(hf_name):
    assert hf_name.startswith(HF_PREFIX), hf_name
    return hf_name[len(HF_PREFIX):]


def make_features(gen, latent_counts):
    """Token layout of DESIGN 2.1: question <bot> <latent>*k <eot> rest <eos>; labels -100
    on the question, <bot>, the latents and <eot>."""
    feats = []
    for (q_len, _, rest_len), k in zip(SAMPLES, latent_counts):
        question = torch.randint(0, TEXT_VOCAB, (q_len,), generator=gen).tolist()
        rest = torch.randint(0, TEXT_VOCAB, (rest_len,), generator=gen).tolist() + [EOS]
        ids = question + [BOT] + [LATENT] * k + [EOT] + rest
        labels = [-100] * (q_len + k + 2) + rest
        feats.append({"input_ids": ids, "labels": labels})
    return feats


def collate(feats):
    """DESIGN 2.2 / the reference collator: samples with latents are left-padded so their
    first <latent> is at the same column; samples without are not shifted; then all are
    right-padded. Pads: the pad token, attention mask 0, position 0, label -100."""
    first = [f["input_ids"].index(LATENT) for f in feats if LATENT in f["input_ids"]]
    f_col = max(first) if first else 0
    rows = []
    for f in feats:
        n_pad = f_col - f["input_ids"].index(LATENT) if LATENT in f["input_ids"] else 0
        n = len(f["input_ids"])
        rows.append({"input_ids": [EOS] * n_pad + f["input_ids"], "labels": [-100] * n_pad + f["labels"],
                     "attention_mask": [0] * n_pad + [1] * n, "position_ids": [0] * n_pad + list(range(n))})
    L = max(len(r["input_ids"]) for r in rows)
    pad = {"input_ids": EOS, "labels": -100, "attention_mask": 0, "position_ids": 0}
    return {k: torch.tensor([r[k] + [v] * (L - len(r[k])) for r in rows], dtype=torch.int64) for k, v in pad.items()}


def model_call(model, embeds, attention_mask, position_ids, cache):
    """One HF forward over some columns; returns (logits, last hidden state after ln_f, cache)."""
    kwargs = dict(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                  output_hidden_states=True, use_cache=True)
    if cache is not None:
        # transformers 5 renamed past_key_values to cache; accept either spelling.
        kwargs["cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"] = cache
    out = model(**kwargs)
    new_cache = out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values
    return out.logits, out.hidden_states[-1], new_cache


def latent_lists(input_ids):
    return [(row == LATENT).nonzero().flatten().tolist() for row in input_ids]


def pass_ranges(input_ids):
    """[0, f), then one column per latent pass, then the rest (as in the reference forward)."""
    lists = latent_lists(input_ids)
    n = max(len(l) for l in lists)
    L = input_ids.shape[1]
    if n == 0:
        return [(0, L)]
    f = min(l[0] for l in lists if l)
    return [(0, f)] + [(f + i - 1, f + i) for i in range(1, n)] + [(f + n - 1, L)]


def coconut_forward(model, batch, feedback=True, detach_thoughts=False):
    """The multi-pass forward with a KV cache. Returns (loss, logits [B,L,V], hidden [B,L,C]
    as computed by the pass that ran each column, the list of fed-back hidden states)."""
    input_ids, mask, pos = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    wte = model.transformer.wte
    lists = latent_lists(input_ids)
    ranges = pass_ranges(input_ids)
    embeds = wte(input_ids)
    cache, logits, hiddens, thoughts = None, [], [], []
    for p, (a, b) in enumerate(ranges):
        if cache is not None:
            # The reference trims the cache to the columns before this pass; ours already is.
            assert cache.get_seq_length() == a
        lg, h, cache = model_call(model, embeds[:, a:b], mask[:, :b], pos[:, a:b], cache)
        logits.append(lg)
        hiddens.append(h)
        if p + 1 == len(ranges) or not feedback:
            continue
        # Feed back: the p-th latent of each sample that has one gets the hidden state of the
        # column before it. Rebuild embeds out of place so autograd sees every replacement.
        rows = [list(embeds[s].unbind(0)) for s in range(embeds.shape[0])]
        for s, cols in enumerate(lists):
            if len(cols) > p:
                col = cols[p]
                assert a <= col - 1 < b, (p, s, col, a, b)
                thought = h[s, col - 1 - a]
                thoughts.append(thought)
                rows[s][col] = thought.detach() if detach_thoughts else thought
        embeds = torch.stack([torch.stack(r) for r in rows])
    logits = torch.cat(logits, dim=1)
    hidden = torch.cat(hiddens, dim=1)
    loss = shifted_ce(logits, batch["labels"])
    return loss, logits, hidden, thoughts


def shifted_ce(logits, labels):
    """HF causal LM loss: logits at column t predict labels[t+1]; mean over labels != -100."""
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def recompute_forward(model, batch):
    """The same function without a KV cache: n+1 full forwards over [0, L), filling in one
    thought after each. Causality makes every column's value equal to the cached version's."""
    input_ids, mask, pos = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    lists = latent_lists(input_ids)
    n = max(len(l) for l in lists)
    embeds = model.transformer.wte(input_ids)
    for p in range(n + 1):
        out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, output_hidden_states=True)
        if p == n:
            return shifted_ce(out.logits, batch["labels"])
        h = out.hidden_states[-1]
        rows = [list(embeds[s].unbind(0)) for s in range(embeds.shape[0])]
        for s, cols in enumerate(lists):
            if len(cols) > p:
                rows[s][cols[p]] = h[s, cols[p] - 1]
        embeds = torch.stack([torch.stack(r) for r in rows])


def hf_loss(model, batch):
    """One ordinary HF forward over the whole batch and its causal LM loss. HF's own loss
    (labels=...) upcasts the logits to float32, which would round a float64 run, so in
    float64 the same shifted cross-entropy is applied to HF's logits here."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
                labels=batch["labels"] if model.dtype == torch.float32 else None)
    return out.loss if model.dtype == torch.float32 else shifted_ce(out.logits, batch["labels"])


def grads_of(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {our_name(n): p.grad.detach().clone() for n, p in model.named_parameters()}


def max_rel_diff(ga, gb):
    """Largest |a-b| / max|b| over the tensors (each tensor relative to its own scale)."""
    return max(((ga[k] - gb[k]).abs().max() / gb[k].abs().max().clamp_min(1e-30)).item() for k in gb)


def tolerance_ratio(a, b, rel=TEST_REL):
    """The C++ test's criterion |a-b| <= rel * max(|b|, TEST_FLOOR * max|b|), as the worst
    ratio of |a-b| to that bound (<= 1 passes)."""
    a, b = a.detach().double(), b.detach().double()
    bound = rel * torch.maximum(b.abs(), TEST_FLOOR * b.abs().max())
    return ((a - b).abs() / bound).max().item()


def check(what, loss_a, loss_b, ga, gb, tol):
    dl = abs(loss_a.item() - loss_b.item()) / abs(loss_b.item())
    dg = max_rel_diff(ga, gb)
    print(f"check {what}: loss {loss_a.item():.7f} vs {loss_b.item():.7f} (rel {dl:.2e}), grads max rel {dg:.2e}")
    assert dl < tol and dg < tol, f"sanity check failed: {what}"
    return dg


def main():
    default_out = os.path.join(HERE, "..", "tests", "fixtures", "coconut_multipass")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=default_out)
    args = parser.parse_args()
    out_dir = os.path.normpath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model32 = GPT2LMHeadModel.from_pretrained(os.path.normpath(MODEL_DIR), attn_implementation="eager",
                                              dtype=torch.float32)
    model32.eval()  # the tiny model has all dropout 0 anyway
    assert model32.config._attn_implementation == "eager"
    assert model32.lm_head.weight is model32.transformer.wte.weight
    # The golden values are computed in float64 from the same (float32) weights: the exact
    # answer for those weights up to the final rounding, so a comparison measures only the
    # float32 error of the C++ side. HF in float32 differs from it by the amount reported
    # in the README (the noise floor of any float32 implementation).
    model = copy.deepcopy(model32).double()
    assert model.lm_head.weight is model.transformer.wte.weight

    counts = [k for _, k, _ in SAMPLES]
    batch = collate(make_features(torch.Generator().manual_seed(SEED), counts))
    flat = collate(make_features(torch.Generator().manual_seed(SEED + 1), [0] * len(SAMPLES)))
    assert pass_ranges(flat["input_ids"]) == [(0, flat["input_ids"].shape[1])]

    for m, tol in ((model32, 1e-5), (model, 1e-10)):
        # 1. No latents anywhere: one pass, equal to HF's own causal LM loss on the same batch.
        loss_mp = coconut_forward(m, flat)[0]
        g_mp = grads_of(m, loss_mp)
        loss_hf = hf_loss(m, flat)
        check(f"{m.dtype}: no latents == HF forward", loss_mp, loss_hf, g_mp, grads_of(m, loss_hf), tol)
        # 2. The latent batch with the feedback off (latents stay token embeddings): the
        #    cached passes must equal one ordinary forward over all columns.
        loss_nf = coconut_forward(m, batch, feedback=False)[0]
        g_nf = grads_of(m, loss_nf)
        loss_one = hf_loss(m, batch)
        check(f"{m.dtype}: passes without feedback == one forward", loss_nf, loss_one, g_nf,
              grads_of(m, loss_one), tol)
        # 3. Recomputing without a KV cache gives the same function.
        loss_c = coconut_forward(m, batch)[0]
        g_c = grads_of(m, loss_c)
        loss_rc = recompute_forward(m, batch)
        check(f"{m.dtype}: cached passes == recompute without cache", loss_c, loss_rc, g_c,
              grads_of(m, loss_rc), tol)

    # The reference itself.
    loss, logits, hidden, thoughts = coconut_forward(model, batch)
    grads = grads_of(model, loss)
    assert all(torch.isfinite(g).all() for g in grads.values())

    # How far HF in float32 is from it, in units of the C++ test's tolerance.
    loss32, _, hidden32, _ = coconut_forward(model32, batch)
    g32 = grads_of(model32, loss32)
    mask = batch["attention_mask"].bool()
    f32_floor = {"grads": max(tolerance_ratio(g32[k], grads[k]) for k in grads),
                 "hidden": tolerance_ratio(hidden32[mask], hidden[mask]),
                 "loss": abs(loss32.item() - loss.item()) / abs(loss.item())}
    print(f"HF float32 vs float64 in units of the test tolerance: {f32_floor}")

    # How much the fed-back path matters: the gradients with the thoughts detached differ by
    # this much, so a C++ backward that dropped it would fail the comparison.
    loss_det = coconut_forward(model, batch, detach_thoughts=True)[0]
    g_det = grads_of(model, loss_det)
    detach_effect = {k: ((g_det[k] - grads[k]).abs().max() / grads[k].abs().max()).item() for k in grads}
    assert abs(loss_det.item() - loss.item()) < 1e-12
    assert min(detach_effect.values()) > 1e-3, detach_effect
    # And the thoughts matter for the loss: with plain latent embeddings it differs.
    loss_nf = coconut_forward(model, batch, feedback=False)[0]
    assert abs(loss_nf.item() - loss.item()) > 1e-3

    ranges = pass_ranges(batch["input_ids"])
    tensors = {
        "input_ids": batch["input_ids"],
        "labels": batch["labels"],
        "attention_mask": batch["attention_mask"],
        "position_ids": batch["position_ids"],
        "latent_id": torch.tensor([LATENT], dtype=torch.int64),
        "passes": torch.tensor(ranges, dtype=torch.int64),
        "loss": loss.detach().float().reshape(1),
        "loss_without_feedback": loss_nf.detach().float().reshape(1),
        "logits": logits.detach().float().contiguous(),
        "hidden": hidden.detach().float().contiguous(),
        "thoughts": torch.stack(thoughts).detach().float().contiguous(),
    }
    for name, g in grads.items():
        tensors["grad." + name] = g.float().contiguous()

    settings = {
        "made_by": "tools/make_coconut_fixture.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "safetensors": safetensors.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "model": "tests/fixtures/gpt2_tiny (GPT2LMHeadModel, eager attention, float32, eval, dropout 0)",
        "seed": SEED,
        "tokens": {"eos_and_pad": EOS, "bot": BOT, "eot": EOT, "latent": LATENT, "text": f"[0, {TEXT_VOCAB})"},
        "samples": [{"question": q, "latents": k, "rest_with_eos": r + 1} for q, k, r in SAMPLES],
        "passes": ranges,
        "loss": "mean cross-entropy of logits[:, t] vs labels[:, t+1] over labels != -100",
        "golden_dtype": "float64 (model weights float32, converted exactly), stored as float32",
        "hf_float32_vs_golden_in_test_tolerance_units": {k: float(f"{v:.3g}") for k, v in f32_floor.items()},
        "detach_effect": {k: float(f"{v:.3g}") for k, v in sorted(detach_effect.items())},
    }
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "reference.safetensors"),
                                metadata={"settings": json.dumps(settings, sort_keys=True)})
    write_readme(out_dir, settings, tensors, detach_effect)
    print(f"wrote {out_dir}: passes {ranges}, loss {loss.item():.6f} "
          f"(without feedback {loss_nf.item():.6f}), {len(thoughts)} thoughts")


def write_readme(out_dir, settings, tensors, detach_effect):
    rows = "\n".join(f"| `{name}` | {str(t.dtype).replace('torch.', '')} | {list(t.shape)} |"
                     for name, t in tensors.items() if not name.startswith("grad."))
    smallest = min(detach_effect, key=detach_effect.get)
    f32 = settings["hf_float32_vs_golden_in_test_tolerance_units"]
    text = f"""# coconut_multipass: independent reference of the Coconut multi-pass forward/backward

Generated by `python3 tools/make_coconut_fixture.py` (not run in CI; rerun by hand and commit
the output). Made with torch {settings['torch']}, transformers {settings['transformers']},
safetensors {settings['safetensors']}, numpy {settings['numpy']}, Python {settings['python']}, on the CPU,
from the model in `tests/fixtures/gpt2_tiny/` (eager attention, float32, dropout 0).

The forward mirrors the official reference (facebookresearch/coconut `coconut.py`,
`Coconut.forward`, and the `MyCollator` padding of `dataset.py`), see DESIGN.md 2.2:
Hugging Face `GPT2LMHeadModel` called with `inputs_embeds`, `attention_mask[:, :end]`,
`position_ids`, the KV cache of the earlier passes and `output_hidden_states` (the last one
is after `ln_f`). Nothing is detached. The script first checks itself, in float32 and
float64: a batch without latents equals HF's own loss; the latent batch with the feedback
off equals one ordinary forward (loss and gradients); the cached passes equal a recompute
without cache.

The golden values are computed in float64 from the float32 weights of `model.safetensors`
(exact conversion) and stored rounded to float32, so a comparison measures only the
float32 error of the implementation under test. For scale: HF itself in float32 differs
from them by {f32['grads']:.2f} (gradients) and {f32['hidden']:.2f} (hidden states) times the
tolerance of `tests/model/test_multipass_reference.cpp` (|a-b| <= {TEST_REL:g} * max(|b|,
{TEST_FLOOR:g} * max|b| of the tensor)), and by {f32['loss']:.1e} relative on the loss.

## Batch

Three samples `question <bot> <latent>*k <eot> rest <eos>` with k = 3, 1, 0 (question
lengths 6, 8, 5; rest 4, 5, 6 tokens plus `<eos>`), random text tokens in [0, 93),
`<eos>` = pad = 93, `<bot>` = 94, `<eot>` = 95, `<latent>` = 96. Samples with latents are
left-padded so their first `<latent>` is at the same column, the sample without latents is
not shifted, all are right-padded; pads have attention mask 0, position 0, label -100;
labels are -100 on question, `<bot>`, latents, `<eot>`. Passes `{settings['passes']}`.

## reference.safetensors

| name | dtype | shape |
|---|---|---|
{rows}
| `grad.<name>` | float32 | shape of parameter `<name>` |

- `input_ids`, `labels`, `attention_mask`, `position_ids`: the collated batch, [B, L] batch-major.
- `passes`: [begin, end) column range of each pass, in order.
- `loss`: mean cross-entropy of the concatenated logits at column t vs `labels[:, t+1]`
  over labels != -100. `loss_without_feedback`: the same batch with the latents left as
  ordinary token embeddings (shows that the thoughts change the loss).
- `logits`, `hidden`: per column, from the pass that computed it (`hidden` = final-norm
  hidden states). Rows of left padding are meaningless: such a query sees no key, and HF's
  eager attention then averages uniformly over all keys (ours outputs zeros).
- `thoughts`: the fed-back hidden states in feedback order (pass 0 samples 0, 1; pass 1
  sample 0; pass 2 sample 0).
- `grad.<name>`: gradient of `loss` for every parameter, our names (HF without `transformer.`);
  `grad.wte.weight` includes the tied LM head. Detaching the fed-back thoughts changes every
  gradient tensor by at least {detach_effect[smallest]:.2g} of its largest element (least: `{smallest}`).

Settings are also in the file's `__metadata__`, key `settings`, as JSON.
"""
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
