#!/bin/bash
# Alternates the binary of 2ae68ea (before issue 23) and the current one.
out=$(dirname "$0")
for k in 1 2 3 4; do
  for b in base new; do
    /tmp/weft-bench-$b run shm-interleaved udp-interleaved --runs 5 --out $out/$b-$k > $out/$b-$k.txt 2>&1
  done
done
echo done > $out/finished
