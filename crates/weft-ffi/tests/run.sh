#!/usr/bin/env bash
# The C ABI's tests, run by scripts/test after `cargo build --release -p
# weft-ffi` and of weft's ping, pong and market_data examples: checks
# include/weft.h is what cbindgen makes of src/; compiles the C tests, the
# C++ tests and the C++ examples with warnings as errors (against the
# static and the shared library) and runs them, each in a fresh private
# directory: the C checks (node, channels, raw rings, counters, errors),
# the C++ wrappers' checks, then C++ ping against Rust pong and Rust ping
# against C++ pong over shm: and udp:// (a C++ publisher to a Rust
# subscriber and back, and the reverse; every reply is checked), and
# market data: all roles in C++, then a C++ publisher through a Rust
# gateway to a Rust and a C++ subscriber.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ffi=crates/weft-ffi
lib=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cbindgen --quiet --config $ffi/cbindgen.toml --crate weft-ffi --output "$work/weft.h"
if ! diff -u $ffi/include/weft.h "$work/weft.h"; then
    echo "crates/weft-ffi/include/weft.h is stale: regenerate it (see cbindgen.toml)" >&2
    exit 1
fi

cc_flags=(-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -O2 -Wall -Wextra -Werror -pedantic -I $ffi/include)
gcc "${cc_flags[@]}" $ffi/tests/c/basic.c $lib/libweft_ffi.a -lpthread -ldl -lm -o "$work/basic-static"
gcc "${cc_flags[@]}" $ffi/tests/c/basic.c -L $lib -lweft_ffi -Wl,-rpath,"$PWD/$lib" -o "$work/basic-shared"
private_dir() {
    local d
    d=$(mktemp -d "$work/dir.XXXXXX")
    chmod 700 "$d"
    echo "$d"
}
for t in basic-static basic-shared; do
    echo "-- $t"
    "$work/$t" "$(private_dir)"
done

# As a user links it: installed under a prefix, flags from pkg-config.
scripts/install-ffi "$work/prefix" > /dev/null
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046 # pkg-config prints several flags
gcc -std=c11 -D_DEFAULT_SOURCE -Wall -Werror $ffi/tests/c/basic.c $(pkg-config --cflags --libs weft) \
    -Wl,-rpath,"$work/prefix/lib" -o "$work/basic-pkgconfig"
echo "-- basic-pkgconfig"
"$work/basic-pkgconfig" "$(private_dir)"

# And through CMake (pkg_check_modules), as docs/bindings.md shows.
cmake -S $ffi/tests/cmake -B "$work/cmake" -DCMAKE_BUILD_TYPE=Release -DCMAKE_BUILD_RPATH="$work/prefix/lib" > /dev/null
cmake --build "$work/cmake" > /dev/null
echo "-- basic (CMake)"
"$work/cmake/basic" "$(private_dir)"

cxx_flags=(-std=c++20 -O2 -Wall -Wextra -Werror -pedantic -I $ffi/include)
for ex in ping pong market_data; do
    g++ "${cxx_flags[@]}" $ffi/examples/cpp/$ex.cpp $lib/libweft_ffi.a -lpthread -ldl -lm -o "$work/cpp-$ex"
done
g++ "${cxx_flags[@]}" $ffi/tests/cpp/rings.cpp -L $lib -lweft_ffi -Wl,-rpath,"$PWD/$lib" -o "$work/cpp-rings"
echo "-- C++ rings and counters (shared library)"
"$work/cpp-rings" "$(private_dir)"

free_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# pair NAME SERVER CLIENT ARGS...: starts SERVER (a pong), then CLIENT (a
# ping) with the same ARGS; both must exit 0 within a minute.
pair() {
    local name=$1 server=$2 client=$3
    shift 3
    echo "-- $name"
    timeout 60 "$server" "$@" > "$work/server.out" &
    local pid=$!
    if ! timeout 60 "$client" "$@"; then
        kill "$pid" 2>/dev/null || true
        echo "$name: the ping failed (pong said: $(cat "$work/server.out"))" >&2
        exit 1
    fi
    wait "$pid" || { echo "$name: the pong failed: $(cat "$work/server.out")" >&2; exit 1; }
}
rust=target/release/examples
p1=$(free_port)
p2=$(free_port)
udp=(--ping "udp://239.77.53.$((p1 % 200 + 1)):$p1" --pong "udp://239.77.53.$((p2 % 200 + 1)):$p2")
pair "C++ ping, Rust pong, shm:" "$rust/pong" "$work/cpp-ping" --threading invoker --count 20000 --dir "$(private_dir)"
pair "C++ ping, Rust pong, udp://" "$rust/pong" "$work/cpp-ping" --threading invoker --count 5000 "${udp[@]}" --dir "$(private_dir)"
pair "Rust ping, C++ pong, shm:" "$work/cpp-pong" "$rust/ping" --threading invoker --count 20000 --dir "$(private_dir)"
pair "Rust ping, C++ pong, udp://" "$work/cpp-pong" "$rust/ping" --threading invoker --count 5000 "${udp[@]}" --dir "$(private_dir)"

# Market data: every role in C++ (a publisher over udp://, the gateway into
# shm:, two subscribers; each checks every quote arrives, in order).
p3=$(free_port)
md_udp="udp://239.77.54.$((p3 % 200 + 1)):$p3"
echo "-- market data, all C++"
timeout 120 "$work/cpp-market_data" --role all --subscribers 2 --count 20000 --udp "$md_udp" --dir "$(private_dir)"

# started ROLE LOG BINARY ARGS...: starts a market_data role in the
# background (its pid in $started_pid) and waits for its "ready" line.
started() {
    local log=$1
    shift
    timeout 120 "$@" > "$log" 2>&1 &
    started_pid=$!
    local until=$((SECONDS + 60))
    until grep -q "ready" "$log"; do
        if ! kill -0 "$started_pid" 2>/dev/null || [ $SECONDS -gt $until ]; then
            echo "market data: $* did not get ready: $(cat "$log")" >&2
            exit 1
        fi
        sleep 0.05
    done
}
echo "-- market data: C++ publisher, Rust gateway, a Rust and a C++ subscriber"
md_dir=$(private_dir)
md=(--count 20000 --udp "$md_udp" --shm shm:md-mixed --dir "$md_dir")
started "$work/gw.log" "$rust/market_data" --role gateway "${md[@]}"
gw=$started_pid
started "$work/rs-sub.log" "$rust/market_data" --role subscriber --id 0 "${md[@]}"
rs_sub=$started_pid
started "$work/cpp-sub.log" "$work/cpp-market_data" --role subscriber --id 1 "${md[@]}"
cpp_sub=$started_pid
timeout 120 "$work/cpp-market_data" --role publisher "${md[@]}"
for who in rs_sub cpp_sub gw; do
    if ! wait "${!who}"; then
        echo "market data: $who failed" >&2
        cat "$work/gw.log" "$work/rs-sub.log" "$work/cpp-sub.log" >&2
        exit 1
    fi
done
cat "$work/rs-sub.log" "$work/cpp-sub.log" "$work/gw.log"
