#!/usr/bin/env bash
# The exporter's cost (issue 19): shm-pingpong p50 while `weft-stat serve`
# is scraped once a second with every level on (host levels, the 1 ms burst
# sampler, and the shipped alert rules evaluated every second), against the
# same with --no-host (weft's counters only: no host levels, no burst
# sampler, no rules),
# alternated ROUNDS times, one run each; prints p50, p99, p99.9 and floors.
#   overhead.sh [ROUNDS=5]
set -euo pipefail
cd "$(dirname "$0")/../../.."
rounds=${1:-5}
bench=target/release/weft-bench
stat=target/release/weft-stat
port=19464
one() {
    local mode=$1
    local args=(serve --listen "127.0.0.1:$port")
    if [ "$mode" = off ]; then
        args+=(--no-host)
    else
        args+=(--rules tools/weft-stat/rules/default.toml)
    fi
    "$stat" "${args[@]}" 2>/dev/null &
    local serve=$!
    sleep 0.3
    ( while true; do curl -s "http://127.0.0.1:$port/metrics" > /dev/null || true; sleep 1; done ) &
    local scraper=$!
    local p50
    p50=$("$bench" run shm-pingpong --runs 1 --json 2>/dev/null | python3 -c 'import json,sys
for l in sys.stdin:
    d = json.loads(l)
    if d.get("scenario") == "shm-pingpong": print("p50", d["p50_ns"], "p99", d["p99_ns"], "p99.9", d["p99_9_ns"], "floor", d["probe_before_ns"], d["probe_after_ns"])')
    kill "$scraper" "$serve" 2>/dev/null || true
    wait "$serve" 2>/dev/null || true
    echo "$mode $p50"
}
for r in $(seq "$rounds"); do
    one on
    one off
done
