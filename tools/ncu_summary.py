#!/usr/bin/env python3
"""Sums GPU time per kernel from `ncu --metrics gpu__time_duration.sum --print-summary
per-kernel` output: one Markdown row per kernel name (all launch shapes together),
largest first, with its share of the profiled time. Used to find what limits the
CUDA training step (docs/gpu.md).
    usage: tools/ncu_summary.py NCU_OUTPUT [--top 25]"""
import argparse
import re

UNITS = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}


def kernel_name(signature):
    """A short name: the function's name without namespaces, template arguments or parameters."""
    name = re.sub(r"^void ", "", signature)
    name = name.replace("<unnamed>", "anon").replace("(anonymous namespace)", "anon")
    name = re.sub(r"\(.*", "", name)
    name = re.sub(r"<.*", "", name)
    return name.split("::")[-1][:60] if "cutlass" not in signature else signature[:80]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    totals, launches, current = {}, {}, None
    header = re.compile(r"^  (\S.*) \(\d+, \d+, \d+\)x\(\d+, \d+, \d+\), Device \d+, CC [\d.]+, Invocations (\d+)")
    metric = re.compile(r"^\s+gpu__time_duration\.sum\s+(\S+)\s+[\d.,]+\s+[\d.,]+\s+([\d.,]+)")
    for line in open(a.path, errors="replace"):
        m = header.match(line)
        if m:
            current = (kernel_name(m.group(1)), int(m.group(2)))
            continue
        m = metric.match(line)
        if m and current:
            unit = m.group(1)
            if unit not in UNITS:
                raise SystemExit(f"ncu_summary: unknown time unit {unit!r}")
            name, n = current
            totals[name] = totals.get(name, 0.0) + n * float(m.group(2).replace(",", "")) * UNITS[unit]
            launches[name] = launches.get(name, 0) + n
            current = None
    if not totals:
        raise SystemExit(f"ncu_summary: no per-kernel gpu__time_duration.sum rows in {a.path}")
    all_us = sum(totals.values())
    print(f"{sum(launches.values())} launches, {all_us / 1e3:.1f} ms of GPU time\n")
    print("| kernel | launches | ms | share |\n|---|---|---|---|")
    for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"| {name} | {launches[name]} | {us / 1e3:.2f} | {100 * us / all_us:.1f}% |")


if __name__ == "__main__":
    main()
