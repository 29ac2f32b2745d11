#!/usr/bin/env python3
"""`coconut train` with model.init_from: a Hugging Face GPT-2 directory (the tiny fixture
of tests/fixtures/gpt2_tiny, written by transformers) and the BPE tokenizer fixture.
With lr 0 nothing moves, so the exported model must hold the fixture's tensors bit for
bit (the pretrained rows of wte; the added special-token rows are fresh); the model's
shape comes from the fixture's config.json; model.dropout still applies (dropout
0.1 changes the training losses, dropout 0 reproduces them); and two pipeline ranks, each
importing only its stage, export the same file byte for byte. safetensors is read with the
standard library (8-byte header length, JSON header, raw little-endian data).

Usage: test_init_from.py COCONUT_BINARY SOURCE_DIR TEMP_DIR
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

coconut, src, tmp_root = sys.argv[1:4]
os.makedirs(tmp_root, exist_ok=True)
work = tempfile.mkdtemp(dir=tmp_root, prefix="init_from.")
fixture = os.path.join(src, "tests/fixtures/gpt2_tiny")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = (t["dtype"], t["shape"], data[a:b])
    return out


# Short items: the fixture model has only 64 positions.
data_file = os.path.join(work, "tiny.json")
items = [{"question": f"Is {a} bigger than {b}?", "steps": [f"{a} minus {b}."], "answer": "yes" if a > b else "no"}
         for a, b in [(3, 1), (2, 5), (7, 4), (1, 9), (6, 2), (8, 3), (4, 4), (5, 0)]]
json.dump(items, open(data_file, "w"))


def train(name, *sets, ranks=1):
    run_dir = os.path.join(work, name)
    launch = [] if ranks == 1 else ["mpirun", "--oversubscribe", "-np", str(ranks)]
    cmd = launch + [coconut, "train", os.path.join(src, "configs/prosqa_tiny.yaml"), "--set", f"run.dir={run_dir}",
           "--set", f"model.init_from={fixture}", "--set", "data.tokenizer=bpe",
           "--set", f"data.bpe_dir={os.path.join(src, 'tests/fixtures/tokenizer')}", "--set", "train.epochs=2",
           "--set", "data.kind=file", "--set", f"data.train_file={data_file}", "--set", f"data.valid_file={data_file}",
           "--set", "train.batch_size=4", "--set", "curriculum.epochs_per_stage=1",
           "--set", "eval.max_new_tokens=4", "--set", "run.threads=1", "--set", "train.lr=0"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    check(out.returncode == 0, f"{name}: exit {out.returncode}: {out.stderr[-2000:]}")
    return run_dir


plain = train("plain")
again = train("again")
dropped = train("dropout", "model.dropout=0.1")
# Two pipeline stages: each rank initialises and imports only the slices it holds, and
# rank 0 gathers them for the export, which must equal the one-process run's file.
staged = train("pp2", "parallel.pp=2", "train.micro_batch_size=2", ranks=2)
if not failures:
    ref = read_safetensors(os.path.join(fixture, "model.safetensors"))
    got = read_safetensors(os.path.join(plain, "model/model.safetensors"))
    cfg = json.load(open(os.path.join(fixture, "config.json")))
    got_cfg = json.load(open(os.path.join(plain, "model/config.json")))
    for k in ["n_layer", "n_head", "n_embd", "n_positions"]:
        check(got_cfg[k] == cfg[k], f"config {k}: {got_cfg[k]} != fixture's {cfg[k]}")
    compared = 0
    for name, (dtype, shape, raw) in ref.items():
        if not name.startswith("transformer.") or name.endswith(("attn.bias", "attn.masked_bias")):
            continue
        check(name in got, f"{name} missing from the exported model")
        if name not in got:
            continue
        if name == "transformer.wte.weight":  # our vocabulary is larger: compare the pretrained rows
            check(got[name][1][1] == shape[1] and got[name][1][0] > shape[0], f"wte shape {got[name][1]}")
            check(got[name][2][:len(raw)] == raw, "pretrained wte rows differ")
        else:
            check(got[name][1] == shape and got[name][2] == raw, f"{name} differs from the fixture")
        compared += 1
    check(compared >= 10, f"only {compared} tensors compared")
    losses = lambda d: [json.loads(l)["loss"] for l in open(os.path.join(d, "steps.jsonl"))]
    check(losses(plain) == losses(again), "the same run twice gave different losses")
    check(losses(plain) != losses(dropped), "model.dropout=0.1 did not change the losses (dropout ignored)")
    exported = lambda d: open(os.path.join(d, "model/model.safetensors"), "rb").read()
    check(exported(staged) == exported(plain), "pp=2: the exported model differs from the one-process run's")
if failures:
    print(f"{len(failures)} failure(s); files kept in {work}")
    sys.exit(1)
shutil.rmtree(work)
print("ok: init_from imports the fixture's weights, takes its shape, keeps model.dropout")
