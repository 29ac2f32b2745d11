#!/usr/bin/env python3
"""Reads the event files written by tensorboard_write_tool back with the tensorboard
pip package (EventAccumulator, and its record reader with CRC checks) and asserts the
tags, steps and values. Exit 77 (CTest: skipped) when tensorboard cannot be imported.

Usage: test_tensorboard_read.py TOOL_BINARY TEMP_DIR
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
    from tensorboard.util import tensor_util
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
except ImportError as e:
    print(f"SKIPPED: the tensorboard pip package is not importable ({e})")
    sys.exit(77)

tool, tmp_root = sys.argv[1], sys.argv[2]
os.makedirs(tmp_root, exist_ok=True)
work = tempfile.mkdtemp(dir=tmp_root, prefix="tb_read.")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def close(a, b):
    # Values are stored as float32.
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def strict_records(path):
    """Every record of the file, with both CRCs checked; a bad one raises."""
    reader = pywrap_tensorflow.PyRecordReader_New(path)
    out = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return out
        ev = event_pb2.Event()
        ev.ParseFromString(reader.record())
        out.append(ev)


def scalars(directory):
    acc = event_accumulator.EventAccumulator(directory, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def dashboard_scalars(directory):
    """What the TensorBoard server's scalars dashboard sees: the plugin accumulator
    migrates simple_value summaries to tensors of the "scalars" plugin."""
    acc = plugin_event_accumulator.EventAccumulator(directory, size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.PluginTagToContent("scalars").keys()
    return {t: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(t)] for t in tags}


def expect_series(got, tag, want):
    series = got.get(tag)
    check(series is not None, f"tag {tag} missing; tags: {sorted(got)}")
    if series is None:
        return
    check([s for s, _ in series] == [s for s, _ in want], f"{tag}: steps {[s for s, _ in series]}, want {[s for s, _ in want]}")
    for (s, v), (_, w) in zip(series, want):
        check(close(v, w), f"{tag} step {s}: value {v}, want {w}")


try:
    # ---- raw writer: two files in one directory --------------------------------------
    raw = os.path.join(work, "raw")
    subprocess.run([tool, "raw", raw], check=True)
    files = sorted(glob.glob(os.path.join(raw, "events.out.tfevents.*")))
    check(len(files) == 2, f"expected 2 event files, found {files}")
    host = os.uname().nodename
    for f in files:
        parts = os.path.basename(f).split(".")
        check(parts[3].isdigit() and ".".join(parts[4:]).startswith(host), f"file name {f}: want events.out.tfevents.<time>.<host>")
        records = strict_records(f)
        check(records and records[0].file_version == "brain.Event:2", f"{f}: first record is not file_version brain.Event:2")
    first = strict_records(files[0]) if files else []
    check(len(first) == 1 + 20 + 2, f"first file has {len(first)} records, want 23")
    if len(first) > 1:
        check(first[1].wall_time == 1000.0, f"wall_time {first[1].wall_time}, want 1000.0")
    got = scalars(raw)
    expect_series(got, "loss", [(i, 2.5 / (i + 1)) for i in range(10)])
    expect_series(got, "accuracy", [(i, 0.1 * i) for i in range(10)])
    expect_series(got, "neg", [(3, -1.25e-3)])
    expect_series(got, "big", [(1 << 40, 7.0)])
    expect_series(got, "second_file", [(5, 42.0)])
    dash = dashboard_scalars(raw)
    check(sorted(dash) == ["accuracy", "big", "loss", "neg", "second_file"], f"dashboard tags {sorted(dash)}")
    expect_series(dash, "accuracy", [(i, 0.1 * i) for i in range(10)])

    # ---- RunOutput: per-step and per-epoch scalars, metrics.jsonl -------------------
    run = os.path.join(work, "run")
    os.makedirs(run)
    open(os.path.join(run, "events.out.tfevents.1.stale"), "w").write("an old run's file")
    subprocess.run([tool, "run", run], check=True)
    check(not os.path.exists(os.path.join(run, "events.out.tfevents.1.stale")), "a fresh run kept an old event file")
    got = scalars(run)
    steps = range(1, 7)
    expect_series(got, "train/loss", [(s, 3.0 - 0.25 * s) for s in steps])
    expect_series(got, "train/learning_rate", [(s, 1e-4 * s) for s in steps])
    expect_series(got, "train/tokens_per_s", [(s, 1000.0 * s) for s in steps])
    expect_series(got, "train/stage", [(s, (s - 1) // 3) for s in steps])
    expect_series(got, "train/epoch", [(s, (s - 1) // 3) for s in steps])
    expect_series(got, "epoch/loss", [(3, 2.0), (6, 1.5)])
    expect_series(got, "epoch/tokens_per_s", [(3, 1500.0), (6, 1501.0)])
    expect_series(got, "epoch/valid_accuracy", [(3, 0.25), (6, 0.5)])
    expect_series(got, "epoch/stage", [(3, 0), (6, 1)])
    expect_series(got, "epoch/bubble_measured/0", [(3, 0.5), (6, 0.5)])
    expect_series(got, "epoch/bubble_measured/1", [(3, 0.25), (6, 0.25)])
    check("epoch/epoch" not in got and "epoch/step" not in got and "epoch/note" not in got,
          f"axes or text fields logged as scalars: {sorted(got)}")
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    check([r["epoch"] for r in rows] == [0, 1] and [r["loss"] for r in rows] == [2.0, 1.5],
          f"metrics.jsonl rows: {rows}")
finally:
    shutil.rmtree(work, ignore_errors=True)

if failures:
    sys.exit(1)
print("ok: tensorboard reads back every scalar")
