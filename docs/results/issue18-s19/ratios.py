#!/usr/bin/env python3
"""Within-round ratios of a lab-interleaved file: ratios.py FILE BASE:VARIANT..."""
import statistics as st, sys
rows = []
for l in open(sys.argv[1]):
    if l.startswith("round"):
        rows.append({k: float(v) for k, v in (kv.split("=") for kv in l.split()[2:])})
print("rounds", len(rows), "medians:", {n: round(st.median(r[n] for r in rows), 1) for n in rows[0]})
for pair in sys.argv[2:]:
    base, v = pair.split(":")
    rs = sorted(r[v] / r[base] for r in rows)
    print(f"{v}/{base}: median {st.median(rs):.2f}  quartiles {rs[len(rs)//4]:.2f}-{rs[3*len(rs)//4]:.2f}")
