#!/usr/bin/env python3
"""`coconut train` with model.init_from: a Hugging Face GPT-2 directory (the tiny fixture
of tests/fixtures/gpt2_tiny, written by transformers) and the BPE tokenizer fixture.
With lr 0 nothing moves, so the exported model must hold the fixture's tensors bit for
bit (the pretrained rows of wte; the added special-token rows are fresh); the model's
shape comes from the fixture's config.json; model.dropout still applies (dropout
0.1 changes the training losses, dropout 0 reproduces them); and two pipeline ranks, each
importing only its stage, export the same file byte for byte.

With the word tokenizer, a run started from a model trained on other words keeps the
model's vocabulary (RUN/model/tokenizer.txt) at its ids and appends the new words, so
every pretrained embedding row stays with its word; a model directory without its
vocabulary, or with another run's, is refused; `coconut ckpt export` of a word run's
checkpoint writes the vocabulary beside the weights. safetensors is read with the
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


# ---- the word tokenizer: the pretrained vocabulary keeps its ids ----
def word_run(name, items, *sets, expect_exit=0):
    data = os.path.join(work, name + ".json")
    json.dump(items, open(data, "w"))
    run_dir = os.path.join(work, name)
    cmd = [coconut, "train", os.path.join(src, "configs/prosqa_tiny.yaml"), "--set", f"run.dir={run_dir}",
           "--set", "data.kind=file", "--set", f"data.train_file={data}", "--set", f"data.valid_file={data}",
           "--set", "train.epochs=1", "--set", "train.batch_size=4", "--set", "curriculum.method=cot",
           "--set", "eval.max_new_tokens=4", "--set", "run.threads=1", "--set", "model.max_positions=64"]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    check(out.returncode == expect_exit, f"{name}: exit {out.returncode}, expected {expect_exit}: {out.stderr[-2000:]}")
    return run_dir, out.stderr


def tokens(path):
    return open(path).read().splitlines()[2:]  # after the magic and size lines


first_items = [{"question": f"Is {a} bigger than {b}?", "steps": [f"{a} minus {b}."], "answer": "yes" if a > b else "no"}
               for a, b in [(3, 1), (2, 5), (7, 4), (1, 9)]]
# New words that sort before and among the old ones ("Are", "2", "less"): a vocabulary
# built afresh would move every old word.
second_items = [{"question": f"Are {a} and {b} less than 2?", "steps": [f"{a} plus {b}."], "answer": "no"}
                for a, b in [(0, 8), (2, 6)]]
base, _ = word_run("word_base", first_items, "checkpoint.at_epoch_end=true")
if not failures:
    check(open(os.path.join(base, "model/tokenizer.txt")).read() == open(os.path.join(base, "tokenizer.txt")).read(),
          "the exported model's tokenizer.txt differs from the run's")
    ext, _ = word_run("word_ext", second_items, f"model.init_from={base}/model", "train.lr=0")
if not failures:
    old_tok, new_tok = tokens(os.path.join(base, "tokenizer.txt")), tokens(os.path.join(ext, "tokenizer.txt"))
    check(new_tok[:len(old_tok)] == old_tok, "the extended vocabulary moved a pretrained word")
    added = [t.split(" ", 1)[1] for t in new_tok[len(old_tok):]]
    check(added == sorted(added) and "Are" in added and "less" in added and "bigger" not in added,
          f"added words {added}")
    w_old = read_safetensors(os.path.join(base, "model/model.safetensors"))["transformer.wte.weight"]
    w_new = read_safetensors(os.path.join(ext, "model/model.safetensors"))["transformer.wte.weight"]
    check(w_new[1] == [len(new_tok), w_old[1][1]], f"wte shape {w_new[1]} for {len(new_tok)} words")
    check(w_new[2][:len(w_old[2])] == w_old[2], "lr 0: the pretrained rows of wte moved")
    # `coconut ckpt export` of the base run's last checkpoint writes the vocabulary beside
    # the weights (the checkpoint keeps it), and a run starts from that export exactly as
    # from RUN/model.
    hf = os.path.join(work, "exported")
    out = subprocess.run([coconut, "ckpt", "export", os.path.join(base, "checkpoints"), "--to", hf],
                         capture_output=True, text=True, timeout=120)
    check(out.returncode == 0, f"ckpt export: exit {out.returncode}: {out.stderr[-1000:]}")
    check(os.path.exists(os.path.join(hf, "tokenizer.txt")) and
          open(os.path.join(hf, "tokenizer.txt")).read() == open(os.path.join(base, "tokenizer.txt")).read(),
          "ckpt export: no tokenizer.txt, or not the run's")
    check("word vocabulary" in out.stdout, f"ckpt export does not say it wrote the vocabulary: {out.stdout!r}")
    same_bytes = lambda a, b: open(a, "rb").read() == open(b, "rb").read()
    check(same_bytes(os.path.join(hf, "model.safetensors"), os.path.join(base, "model/model.safetensors")),
          "ckpt export: the weights differ from the run's exported model")
    ext2, _ = word_run("word_ext_from_ckpt", second_items, f"model.init_from={hf}", "train.lr=0")
    if not failures:
        check(tokens(os.path.join(ext2, "tokenizer.txt")) == tokens(os.path.join(ext, "tokenizer.txt")),
              "from the checkpoint's export: another vocabulary than from RUN/model")
        check(same_bytes(os.path.join(ext2, "model/model.safetensors"), os.path.join(ext, "model/model.safetensors")),
              "from the checkpoint's export: another model than from RUN/model")
    # Without the vocabulary beside the model: refused before anything is written.
    bare = os.path.join(work, "bare_model")
    shutil.copytree(os.path.join(base, "model"), bare)
    os.remove(os.path.join(bare, "tokenizer.txt"))
    run_dir, err = word_run("word_bare", second_items, f"model.init_from={bare}", expect_exit=2)
    check("tokenizer.txt" in err and "does not exist" in err, f"no tokenizer.txt: message {err[-500:]!r}")
    check(not os.path.exists(run_dir), "no tokenizer.txt: the run directory was created")
    # Another run's vocabulary (other words, another size): refused, naming both sizes.
    shutil.copy(os.path.join(ext, "tokenizer.txt"), os.path.join(bare, "tokenizer.txt"))
    _, err = word_run("word_other", second_items, f"model.init_from={bare}", expect_exit=1)
    check("not from the same run" in err, f"another run's tokenizer.txt: message {err[-500:]!r}")

if failures:
    print(f"{len(failures)} failure(s); files kept in {work}")
    sys.exit(1)
shutil.rmtree(work)
print("ok: init_from imports the fixture's weights, takes its shape, keeps model.dropout, extends a word vocabulary")
