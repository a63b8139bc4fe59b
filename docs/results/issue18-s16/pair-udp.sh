#!/usr/bin/env bash
# Paired UDP round trips (issue 18, session 16): two weft-bench binaries, the one
# before this session's changes (5564f70) and the one after, run
# `udp-interleaved --runs 3` in turn, ROUNDS times; prints each run's p50s and
# ratios to floor-mcast. Usage: pair-udp.sh OLD NEW [ROUNDS]
set -euo pipefail
old=$1 new=$2 rounds=${3:-4}
for i in $(seq "$rounds"); do
  for b in old new; do
    bin=$old; [ "$b" = new ] && bin=$new
    "$bin" run udp-interleaved --runs 3 2>/dev/null | awk -v b="$b" '
      /interleaved-floor-mcast/ {m=$4} /interleaved-udp-pingpong /{w=$4}
      /interleaved-api-udp/ {a=$4} /interleaved-udp-pingpong-auth/ {k=$4}
      END {printf "%s floor-mcast %s udp-pingpong %s (%.3f) api %s (%.3f) auth %s (%.3f)\n", b, m, w, w/m, a, a/m, k, k/m}'
  done
done
