#!/usr/bin/env bash
# The C++ binding's cost: the shm round trip of C++ ping/pong (through
# weft.hpp and the C ABI) against Rust ping/pong (crates/weft/examples), in
# alternating runs on the same machine, both with invoker threading (the
# node's work on the one thread of each process) and the same loop: node
# work, then one poll or offer, a PAUSE when a round did nothing. Prints each run's p50 and
# the median of each, and their ratio.
#   crates/weft-ffi/bench.sh [RUNS=5] [COUNT=200000]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
count=${2:-200000}
cargo build --release -q -p weft-ffi
cargo build --release -q -p weft --example ping --example pong
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for ex in ping pong; do
    g++ -std=c++20 -O2 -I crates/weft-ffi/include crates/weft-ffi/examples/cpp/$ex.cpp \
        target/release/libweft_ffi.a -lpthread -ldl -lm -o "$work/cpp-$ex"
done
p50() { sed -n 's/.*p50 \([0-9]*\) ns.*/\1/p'; }
# one PONG PING ARGS...: a run; ARGS go to both, $ping_extra to the ping
# too; the ping's p50 is printed.
one() {
    local d
    d=$(mktemp -d "$work/d.XXXXXX")
    chmod 700 "$d"
    "$1" --count "$count" "${@:3}" --dir "$d" > /dev/null &
    # shellcheck disable=SC2086 # words
    "$2" --count "$count" "${@:3}" $ping_extra --dir "$d" | p50
    wait
}
rust=() cpp=()
for i in $(seq "$runs"); do
    rust+=("$(ping_extra='' one target/release/examples/pong target/release/examples/ping --threading invoker --idle busy-spin)")
    # --claims 0: every message by offer, as the Rust ping sends.
    cpp+=("$(ping_extra='--claims 0' one "$work/cpp-pong" "$work/cpp-ping" --threading invoker)")
    echo "run $i: rust p50 ${rust[-1]} ns, c++ p50 ${cpp[-1]} ns"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
r=$(median "${rust[@]}")
c=$(median "${cpp[@]}")
echo "median p50: rust $r ns, c++ $c ns, c++ / rust $(awk -v c="$c" -v r="$r" 'BEGIN {printf "%.2f", c / r}')"
