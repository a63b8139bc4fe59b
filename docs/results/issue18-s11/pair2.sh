#!/bin/bash
for k in 1 2 3 4; do
  for b in base new5; do
    /tmp/p18/$b run shm-throughput shm-throughput-threads shm-throughput-batch shm-pingpong --json --samples 5000000 2>/dev/null | python3 -c "
import sys,json
for l in sys.stdin:
  r=json.loads(l); print('$b', r['scenario'], r.get('msgs_per_s') or '', r.get('p50_ns') or '', r.get('probe_before_ns'), flush=True)"
  done
done
