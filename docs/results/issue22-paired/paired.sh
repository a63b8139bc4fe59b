#!/bin/bash
# Alternates the weft-bench binary of f718df7 (before issue 22's telemetry
# changes) and the current one: shm-interleaved and udp-interleaved, 3 runs
# each, 3 rounds. Build the base with
#   git worktree add /tmp/wb-base f718df7 && (cd /tmp/wb-base && cargo build --release -p weft-bench)
# and copy the binaries to /tmp/weft-bench-base and /tmp/weft-bench-new.
out=$(dirname "$0")
for k in 1 2 3; do
  for b in base new; do
    /tmp/weft-bench-$b run shm-interleaved udp-interleaved --runs 3 --out $out/$b-$k > $out/$b-$k.txt 2>&1
  done
done
echo done > $out/finished
