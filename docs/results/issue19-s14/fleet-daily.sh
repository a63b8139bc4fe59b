#!/usr/bin/env bash
# The worked example of docs/rebalance.md "A fleet's day from Prometheus".
set -u
B=/work/main/target/debug
D=/tmp/fleet
mkdir -p $D/host-a $D/host-b $D/redis $D/daily
$B/examples/skewed_pipeline --dir $D/host-a --scale 4 --seconds 200 > /dev/null &
$B/examples/skewed_pipeline --dir $D/host-a --scale 4 --seconds 200 > /dev/null &
$B/examples/skewed_pipeline --dir $D/host-b --scale 4 --seconds 200 > /dev/null &
sleep 1
$B/weft-stat serve --listen 127.0.0.1:9464 --dir $D/host-a 2>/dev/null &
$B/weft-stat serve --listen 127.0.0.1:9465 --dir $D/host-b 2>/dev/null &
cat > $D/prometheus.yml <<'Y'
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: weft
    static_configs:
      - targets: ['127.0.0.1:9464', '127.0.0.1:9465']
Y
prometheus --config.file=$D/prometheus.yml --storage.tsdb.path=$D/tsdb --web.listen-address=127.0.0.1:9090 >/dev/null 2>&1 &
redis-server --port 6390 --bind 127.0.0.1 --save "" --dir $D/redis >/dev/null &
sleep 75
echo '$ weft-rebalance report --prometheus http://127.0.0.1:9090 --range 1m --step 5s'
$B/weft-rebalance report --prometheus http://127.0.0.1:9090 --range 1m --step 5s
echo '$ weft-rebalance daily --prometheus http://127.0.0.1:9090 --range 1m --step 5s --out-dir /tmp/fleet/daily --redis redis://127.0.0.1:6390'
$B/weft-rebalance daily --prometheus http://127.0.0.1:9090 --range 1m --step 5s --out-dir $D/daily --redis redis://127.0.0.1:6390
echo '$ ls /tmp/fleet/daily'
ls $D/daily
echo '$ weft-stat watch --redis redis://127.0.0.1:6390 --group ops --consumer pager --max 1'
$B/weft-stat watch --redis redis://127.0.0.1:6390 --group ops --consumer pager --max 1
echo '$ weft-rebalance report --prometheus http://127.0.0.1:9091'
$B/weft-rebalance report --prometheus http://127.0.0.1:9091; echo "exit $?"
kill $(jobs -p) 2>/dev/null
wait 2>/dev/null
