#!/usr/bin/env python3
"""`coconut train` writes TensorBoard event files that the tensorboard pip package reads
back: per step train/loss equal to the step's exact loss in steps.jsonl (as float32),
train/stage, train/learning_rate and train/grad_norm (equal to steps.jsonl's); per epoch
epoch/loss equal to metrics.jsonl. Run in
one process and under `mpirun -np 2` with two pipeline stages (rank 0 alone writes one
event file). Also checks the progress line and the log file of every rank. Exit 77
(CTest: skipped) when tensorboard cannot be imported.

Usage: test_train_tensorboard.py COCONUT_BINARY CONFIG TEMP_DIR
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    from tensorboard.backend.event_processing import event_accumulator
except ImportError as e:
    print(f"SKIPPED: the tensorboard pip package is not importable ({e})")
    sys.exit(77)

coconut, config, tmp_root = sys.argv[1:4]
os.makedirs(tmp_root, exist_ok=True)
work = tempfile.mkdtemp(dir=tmp_root, prefix="train_tb.")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def f32_close(a, b):
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def run(name, launcher):
    run_dir = os.path.join(work, name)
    cmd = launcher + [coconut, "train", config, "--set", f"run.dir={run_dir}", "--set", "train.epochs=2",
                      "--set", "curriculum.epochs_per_stage=1", "--set", "data.generate_train=48",
                      "--set", "data.generate_valid=4", "--set", "train.batch_size=16", "--set", "train.log_every=1",
                      "--set", "run.threads=1"]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")  # CI runs as root
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    check(out.returncode == 0, f"{name}: exit {out.returncode}: {out.stderr[-2000:]}")
    if out.returncode != 0:
        return
    log = out.stdout + out.stderr
    check("ETA " in log and "tok/s" in log, f"{name}: no progress line with ETA in the log")
    events = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    check(len(events) == 1, f"{name}: expected one event file, found {events}")
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for t in ["train/loss", "train/stage", "train/learning_rate", "train/tokens_per_s", "train/grad_norm", "epoch/loss"]:
        check(t in tags, f"{name}: tag {t} missing (have {tags})")
    if "train/loss" not in tags or "epoch/loss" not in tags:
        return
    steps = [json.loads(l) for l in open(os.path.join(run_dir, "steps.jsonl"))]
    tb = {e.step: e.value for e in acc.Scalars("train/loss")}
    check(sorted(tb) == [s["step"] for s in steps], f"{name}: steps {sorted(tb)} vs steps.jsonl")
    for s in steps:
        check(s["step"] in tb and f32_close(tb[s["step"]], s["loss"]), f"{name}: step {s['step']} loss")
    stage = {e.step: e.value for e in acc.Scalars("train/stage")}
    for s in steps:
        check(stage.get(s["step"]) == s["stage"], f"{name}: step {s['step']} stage")
    norm = {e.step: e.value for e in acc.Scalars("train/grad_norm")} if "train/grad_norm" in tags else {}
    for s in steps:
        check(s["grad_norm"] > 0 and s["step"] in norm and f32_close(norm[s["step"]], s["grad_norm"]),
              f"{name}: step {s['step']} grad_norm")
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    ep = {e.step: e.value for e in acc.Scalars("epoch/loss")}
    check(len(ep) == len(rows) == 2, f"{name}: {len(ep)} epoch points, {len(rows)} rows")
    for r in rows:
        check(r["step"] in ep and f32_close(ep[r["step"]], r["loss"]), f"{name}: epoch {r['epoch']} loss")
    ranks = int(launcher[launcher.index("-np") + 1]) if launcher else 1
    for r in range(ranks):
        check(os.path.getsize(os.path.join(run_dir, "logs", f"train.rank{r}.log")) > 0, f"{name}: rank {r} log")


run("one_process", [])
run("pp2", ["mpirun", "--oversubscribe", "-np", "2"])
if failures:
    print(f"{len(failures)} failure(s); files kept in {work}")
    sys.exit(1)
shutil.rmtree(work)
print("ok: event files of coconut train read back by tensorboard")
