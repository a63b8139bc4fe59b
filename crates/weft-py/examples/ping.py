"""Python ping, as crates/weft/examples/ping.rs: sends --count messages of
--size bytes on --ping and waits for each to come back on --pong (run a pong
first: the Rust one, pong.cpp or pong.py); checks every reply and prints
round-trip percentiles. Invoker threading: the node's work runs here.

    python ping.py --ping shm:ping --pong shm:pong --count 10000 --size 32 [--dir DIR]
"""
import argparse
import sys
import time

import weft


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--ping", default="shm:ping")
    a.add_argument("--pong", default="shm:pong")
    a.add_argument("--stream", type=int, default=1)
    a.add_argument("--count", type=int, default=10000)
    a.add_argument("--size", type=int, default=32)
    a.add_argument("--timeout-s", type=float, default=60)
    a.add_argument("--dir")
    a.add_argument("--threading", choices=["invoker"], default="invoker")
    # This loop busy-spins (as the Rust examples' --idle busy-spin).
    a.add_argument("--idle", choices=["busy-spin"], default="busy-spin")
    args = a.parse_args()
    cfg = 'threading = "invoker"\n' + ('dir = "%s"\n' % args.dir if args.dir else "")
    size = min(max(args.size, 8), 4096)
    rtt = []
    with weft.Node(cfg) as node:
        pub = node.publication(args.ping, args.stream)
        sub = node.subscription(args.pong, args.stream)
        got = []

        def on(e):
            if isinstance(e, weft.View):
                got.append(bytes(e))

        for i in range(args.count):
            msg = i.to_bytes(8, "little") + bytes([i % 256]) * (size - 8)
            deadline = time.monotonic() + args.timeout_s
            t0 = time.perf_counter_ns()
            while not pub.offer(msg):
                node.do_work()
                if time.monotonic() > deadline:
                    sys.exit("ping: timed out waiting for room to send (is pong running?)")
            while not got:
                node.do_work()
                sub.poll(on, 1)
                if not got and time.monotonic() > deadline:
                    sys.exit("ping: timed out waiting for a reply")
            rtt.append(time.perf_counter_ns() - t0)
            if got.pop() != msg:
                sys.exit("ping: reply %d differs from what was sent" % i)
    rtt.sort()
    pct = lambda p: rtt[min(len(rtt) - 1, int(p * len(rtt)))]  # noqa: E731
    print("ping: %d round trips of %d bytes, p50 %d ns, p99 %d ns, max %d ns"
          % (args.count, size, pct(0.5), pct(0.99), rtt[-1]))


if __name__ == "__main__":
    main()
