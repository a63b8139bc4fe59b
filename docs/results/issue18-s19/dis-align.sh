#!/bin/bash
# rounds of: floor-shm, disruptor-throughput (default slots), disruptor-throughput (slots aligned to 64)
for i in $(seq 1 $1); do
  f=$(/tmp/wb-al run floor-shm --runs 1 2>/dev/null | awk '/^floor-shm/{print $4}')
  a=$(/tmp/wb-al run disruptor-throughput --runs 1 2>&1 | awk '/slot0/{al=$NF} /^disruptor-throughput/{printf "%s@%.1f", al, $(NF-2)/1e6}')
  b=$(DIS_ALIGN=1 /tmp/wb-al run disruptor-throughput --runs 1 2>&1 | awk '/slot0/{al=$NF} /^disruptor-throughput/{printf "%s@%.1f", al, $(NF-2)/1e6}')
  f2=$(/tmp/wb-al run floor-shm --runs 1 2>/dev/null | awk '/^floor-shm/{print $4}')
  echo "floor $f/$f2  default $a  aligned $b"
done
