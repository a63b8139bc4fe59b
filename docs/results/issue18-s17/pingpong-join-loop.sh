#!/bin/bash
# The shm ping/pong examples, N rounds of every threading mode x (yield,
# busy-spin, backoff), with a CPU hog beside them; counts failures (a lost
# first ping times out). Build first: cargo build --release -p weft --examples.
# Usage: pingpong-join-loop.sh N   (EXAMPLES=dir of another build's examples)
cd "$(git rev-parse --show-toplevel)"
N=${1:-40}
dir=$(mktemp -d)
nice -n 5 sh -c 'while :; do :; done' &
hog=$!
trap 'kill $hog 2>/dev/null; rm -rf $dir' EXIT
fail=0; runs=0
for i in $(seq 1 $N); do
  for threading in dedicated shared invoker; do
    for idle in yield busy-spin backoff; do
      a=(--ping shm:ping-$i-$threading-$idle --pong shm:pong-$i-$threading-$idle --count 300 --threading $threading --idle $idle --timeout-s 10 --dir $dir)
      ${EXAMPLES:-target/release/examples}/pong "${a[@]}" >/dev/null 2>&1 &
      pp=$!
      if ! ${EXAMPLES:-target/release/examples}/ping "${a[@]}" > "$dir/last.out" 2>&1; then
        fail=$((fail+1)); echo "FAIL $i $threading $idle: $(tail -2 "$dir/last.out")"
      fi
      wait $pp || { echo "pong failed $i $threading $idle"; }
      runs=$((runs+1))
    done
  done
done
echo "runs=$runs failures=$fail"
