#!/usr/bin/env bash
# The reader's pause count after an empty poll, swept for weft and every peer:
# ROUNDS rounds, each running the throughput scenarios once at every count in
# turn (so each count sees the VM's same levels). Prints one line per count
# per round: count scenario=M msgs/s ...  Usage: sweep.sh BIN ROUNDS COUNT...
set -euo pipefail
bin=$1 rounds=$2
shift 2
for r in $(seq "$rounds"); do
    for n in "$@"; do
        line=$("$bin" run shm-throughput shm-throughput-threads api-shm-throughput rtrb-throughput crossbeam-throughput disruptor-throughput \
            --runs 1 --json --empty-poll-pauses "$n" 2>/dev/null | python3 -c '
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
        echo "round $r pauses $n $line"
    done
done
