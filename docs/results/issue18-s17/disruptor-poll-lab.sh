#!/bin/bash
# Runs disruptor-throughput N times with a build patched by disruptor-poll-lab.patch
# (git apply, then cargo build --release -p weft-bench); prints each run's rate
# and the poller's polls, empty polls and events per poll. Usage: BIN=… disruptor-poll-lab.sh N
for i in $(seq 1 ${1:-40}); do ${BIN:-target/release/weft-bench} run disruptor-throughput --runs 1 --json 2>&1 | python3 -c '
import sys, json
lab=""; rate=0
for l in sys.stdin:
    if l.startswith("LAB"): lab=l.strip()
    else:
        try:
            d=json.loads(l); rate=d.get("msgs_per_s") or rate
        except ValueError: pass
print("%.1f M/s  %s" % (rate/1e6, lab))'; done
