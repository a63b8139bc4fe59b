#!/usr/bin/env bash
# Paired shared-memory throughput (issue 18, session 17): several weft-bench
# binaries run the same scenarios in turn, ROUNDS rounds, one run each, so
# every build sees the VM's same levels. Prints one line per build per round:
#   round R BIN scenario=M msgs/s ...
# Usage: pair-shm.sh ROUNDS "SCENARIO..." BIN...
set -euo pipefail
rounds=$1 scenarios=$2
shift 2
for r in $(seq "$rounds"); do
    for bin in "$@"; do
        # shellcheck disable=SC2086
        line=$("$bin" run $scenarios --runs 1 --json 2>/dev/null | python3 -c '
import json, sys
out = []
for l in sys.stdin:
    try:
        d = json.loads(l)
    except ValueError:
        continue
    if d.get("msgs_per_s"):
        out.append("%s=%.1f" % (d["scenario"], d["msgs_per_s"] / 1e6))
print(" ".join(out))')
        echo "round $r $(basename "$bin") $line"
    done
done
