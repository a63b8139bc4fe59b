#!/bin/bash
# usage: pair.sh ROUNDS "scenarios" bin...
rounds=$1; sc=$2; shift 2
for k in $(seq $rounds); do
  for b in "$@"; do
    /tmp/p18/$b run $sc --json --samples 5000000 2>/dev/null | python3 -c "
import sys,json
for l in sys.stdin:
  try: r=json.loads(l)
  except: continue
  v=r.get('msgs_per_s') or r.get('rate') or r.get('p50_ns')
  print('$b', r.get('scenario'), r.get('msgs_per_s', ''), r.get('p50_ns',''), flush=True)
"
  done
done
