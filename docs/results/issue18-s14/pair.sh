#!/usr/bin/env bash
# Paired before/after: two weft-bench binaries alternated, one run of the
# given scenarios each, ROUNDS times; prints one line per binary per round
# (scenario=msgs/s or p50 ns) to stdout. Usage:
#   pair.sh BEFORE_BIN AFTER_BIN ROUNDS SCENARIO...
set -euo pipefail
before=$1 after=$2 rounds=$3
shift 3
for r in $(seq "$rounds"); do
    for b in before after; do
        bin=${!b}
        line=$("$bin" run "$@" --runs 1 --json 2>/dev/null | python3 -c '
import json, sys
out = []
for l in sys.stdin:
    try:
        d = json.loads(l)
    except ValueError:
        continue
    if "scenario" not in d:
        continue
    v = d.get("msgs_per_s") or d.get("p50_ns")
    out.append("%s=%s" % (d["scenario"], round(v / 1e6, 2) if d.get("msgs_per_s") else v))
print(" ".join(out))')
        echo "round $r $b $line"
    done
done
