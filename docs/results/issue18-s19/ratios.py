#!/usr/bin/env python3
"""Within-round ratios of a lab-interleaved file.

ratios.py FILE BASE:VARIANT...            median and quartiles over all rounds
ratios.py --split COL FILE BASE:VARIANT... the same, rounds sorted into the
    fast level (COL over 50 M msgs/s) and the slow one (COL at most 35)
    (finding 40 splits by bc16-file)
"""
import statistics as st
import sys

args = sys.argv[1:]
split = None
if args and args[0] == "--split":
    split, args = args[1], args[2:]
rows = []
for l in open(args[0]):
    if l.startswith("round"):
        rows.append({k: float(v) for k, v in (kv.split("=") for kv in l.split()[2:])})
groups = [("all", rows)]
if split:
    groups = [("fast", [r for r in rows if r[split] > 50]), ("slow", [r for r in rows if r[split] <= 35])]
for name, rs_ in groups:
    if not rs_:
        continue
    print(name, "rounds", len(rs_), "medians:", {n: round(st.median(r[n] for r in rs_), 1) for n in rs_[0]})
    for pair in args[1:]:
        base, v = pair.split(":")
        rs = sorted(r[v] / r[base] for r in rs_)
        print(f"  {v}/{base}: median {st.median(rs):.2f}  quartiles {rs[len(rs)//4]:.2f}-{rs[3*len(rs)//4]:.2f}")
