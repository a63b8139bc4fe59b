"""Tests of the Python module, run by crates/weft-py/tests/run.sh (part of
scripts/test) in a virtualenv where `pip install ./crates/weft-py` put it.

Every test uses its own private directory and invoker threading: the node's
work runs on the test's thread. The last one subscribes to the Rust
market_data example's stream (publisher over UDP, gateway into shm).
"""
import array
import os
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import weft

try:
    import numpy
except ImportError:  # numpy is optional: run.sh installs it when it can
    numpy = None

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def private_dir():
    d = tempfile.mkdtemp(prefix="weft-py-")
    os.chmod(d, 0o700)
    return d


def node(d=None):
    return weft.Node('threading = "invoker"\ndir = "%s"\nshm_capacity = "64KiB"\n' % (d or private_dir()))


def udp_uri():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "udp://239.77.55.%d:%d" % (port % 200 + 1, port)


def message(seq, size):
    return struct.pack("<Q", seq) + bytes((seq + i) % 256 for i in range(size - 8))


class Receiver:
    """Checks messages arrive in order and intact; counts other events."""

    def __init__(self, size):
        self.size, self.next, self.sessions, self.others = size, 0, 0, []

    def __call__(self, e):
        if isinstance(e, weft.View):
            got = bytes(e)
            if got != message(self.next, self.size):
                raise AssertionError("message %d differs" % self.next)
            self.next += 1
        elif isinstance(e, weft.NewSession):
            self.sessions += 1
        else:
            self.others.append(e)


def until(n, cond, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        n.do_work()


class BadInput(unittest.TestCase):
    def test_configuration_errors_name_the_key(self):
        with self.assertRaises(weft.Error) as c:
            weft.Node('agents = "two"')
        self.assertEqual(c.exception.args[0], "WEFT_ERR_CONFIG")
        self.assertIn("agents", c.exception.args[1])
        with self.assertRaises(weft.Error):
            weft.Node("no_such_key = 1")

    def test_bad_uris(self):
        with node() as n:
            for uri in ["udp://239.1.2.3:x", "tcp://host:1", "shm:"]:
                with self.assertRaises(weft.Error) as c:
                    n.publication(uri, 1)
                self.assertEqual(c.exception.args[0], "WEFT_ERR_URI", uri)

    def test_a_foreign_shm_file_is_reported_once(self):
        d = private_dir()
        with open(os.path.join(d, "foreign.1"), "wb") as f:
            f.write(b"\xab" * 8192)
        with node(d) as n:
            sub = n.subscription("shm:foreign", 1)
            errors = []
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                try:
                    self.assertEqual(sub.poll(lambda e: self.fail("an event: %r" % (e,))), 0)
                except weft.Error as e:
                    errors.append(e.args)
                time.sleep(0.0002)
            self.assertEqual(len(errors), 1, errors)
            self.assertEqual(errors[0][0], "WEFT_ERR_ATTACH")
            self.assertIn("not a weft shared-memory region", errors[0][1])

    def test_too_large_and_not_connected(self):
        with node() as n:
            pub = n.publication("shm:alone", 1)
            self.assertFalse(pub.offer(b"x" * 8))  # no subscriber: nothing written
            sub = n.subscription("shm:alone", 1)
            with self.assertRaises(weft.Error) as c:
                pub.offer(bytes(pub.max_message + 1))
            self.assertEqual(c.exception.args[0], "WEFT_ERR_TOO_LARGE")
            sub.close()


class Streams(unittest.TestCase):
    def stream(self, n, uri, count, size):
        sub = n.subscription(uri, 3)
        pub = n.publication(uri, 3)
        rx = Receiver(size)
        sent = 0
        deadline = time.monotonic() + 30
        while rx.next < count:
            self.assertLess(time.monotonic(), deadline, "%d of %d" % (rx.next, count))
            if sent < count:
                if sent % 2 == 0:
                    sent += pub.offer(message(sent, size))
                else:
                    with weft.claim(pub, size) as v:
                        if v is not None:
                            memoryview(v)[:] = message(sent, size)
                            sent += 1
            n.do_work()
            sub.poll(rx)
        self.assertEqual(rx.sessions, 1)
        self.assertEqual(rx.others, [])
        return pub, sub, rx

    def test_shm_offer_and_claim(self):
        with node() as n:
            self.stream(n, "shm:py-stream", 10000, 64)

    def test_udp_offer_and_claim(self):
        with node() as n:
            self.stream(n, udp_uri(), 3000, 200)

    def test_an_exception_in_a_claim_block_aborts_it(self):
        with node() as n:
            pub, sub, rx = self.stream(n, "shm:py-abort", 10, 32)
            with self.assertRaises(KeyError):
                with weft.claim(pub, 32) as v:
                    memoryview(v)[:] = b"\xee" * 32
                    raise KeyError("half written")
            until(n, lambda: pub.offer(message(10, 32)), "room")
            until(n, lambda: sub.poll(rx) and rx.next == 11, "the message after the abort")

    def test_views_do_not_outlive_their_callback(self):
        with node() as n:
            pub, sub, rx = self.stream(n, "shm:py-views", 1, 32)
            kept, views = [], []
            until(n, lambda: pub.offer(message(1, 32)), "room")
            # The View itself may be kept: it refuses access afterwards.
            until(n, lambda: sub.poll(views.append), "a message")
            with self.assertRaises(BufferError):
                memoryview(views[0])
            # A memoryview of it kept past the callback is an error of the poll.
            until(n, lambda: pub.offer(message(2, 32)), "room")
            with self.assertRaises(weft.Error) as c:
                until(n, lambda: sub.poll(lambda v: kept.append(memoryview(v))), "a message")
            self.assertIn("still alive", c.exception.args[1])

    def test_an_exception_in_a_callback_propagates(self):
        with node() as n:
            pub, sub, rx = self.stream(n, "shm:py-raise", 1, 32)
            until(n, lambda: pub.offer(message(1, 32)), "room")

            def boom(e):
                raise ValueError("from the callback")

            with self.assertRaises(ValueError):
                until(n, lambda: sub.poll(boom), "a message")


class Batches(unittest.TestCase):
    def batch(self, make_out, make_lengths, width=None):
        with node() as n:
            sub = n.subscription("shm:py-batch", 1)
            pub = n.publication("shm:py-batch", 1)
            count, rows, row = 2000, 64, 48
            out, lengths = make_out(rows, row), make_lengths(rows)
            got, events = [], []
            sent = 0
            deadline = time.monotonic() + 30
            while len(got) < count:
                self.assertLess(time.monotonic(), deadline)
                # Sizes vary, one in a hundred longer than a row.
                size = 100 if sent % 100 == 99 else 8 + sent % 40
                if sent < count and pub.offer(message(sent, size)):
                    sent += 1
                n.do_work()
                k = sub.poll_into(out, lengths, events.append, width=width)
                flat = memoryview(out).cast("B")
                for i in range(k):
                    got.append(bytes(flat[i * row:i * row + min(lengths[i], row)]) + b"|%d" % lengths[i])
            for seq, g in enumerate(got):
                size = 100 if seq % 100 == 99 else 8 + seq % 40
                self.assertEqual(g, message(seq, size)[:row] + b"|%d" % size, seq)
            self.assertEqual([type(e) for e in events], [weft.NewSession])

    def test_into_a_bytearray(self):
        self.batch(lambda r, w: bytearray(r * w), lambda r: array.array("I", bytes(4 * r)), width=48)

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_into_numpy_arrays(self):
        self.batch(lambda r, w: numpy.zeros((r, w), numpy.uint8), lambda r: numpy.zeros(r, numpy.uint32))

    def test_wrong_buffers_are_refused(self):
        with node() as n:
            sub = n.subscription("shm:py-refuse", 1)
            lengths = array.array("I", bytes(16))
            with self.assertRaises(weft.Error):
                sub.poll_into(bytes(64), lengths, print, width=16)  # read-only
            with self.assertRaises(weft.Error):
                sub.poll_into(bytearray(64), lengths, print)  # no width for 1-D
            with self.assertRaises(weft.Error):
                sub.poll_into(bytearray(8), lengths, print, width=16)  # too small


class FromRust(unittest.TestCase):
    def test_a_rust_market_data_stream_through_the_gateway(self):
        """The Rust market_data publisher sends quotes over UDP multicast; its
        gateway republishes them into a shm ring; this Python subscriber reads
        the ring and checks every quote, in order."""
        exe = os.path.join(ROOT, "target", "release", "examples", "market_data")
        d, udp, count = private_dir(), udp_uri(), 20000
        common = ["--udp", udp, "--shm", "shm:md", "--dir", d, "--threading", "invoker", "--idle", "backoff"]
        gateway = subprocess.Popen([exe, "--role", "gateway"] + common, stdout=subprocess.PIPE, text=True)
        publisher = None
        try:
            self.assertEqual(gateway.stdout.readline().strip(), "gateway: ready")
            with node(d) as n:
                sub = n.subscription("shm:md", 1)
                publisher = subprocess.Popen(
                    [exe, "--role", "publisher", "--count", str(count)] + common, stdout=subprocess.DEVNULL
                )
                quotes, others = [], []

                def on(e):
                    if isinstance(e, weft.View):
                        quotes.append(struct.unpack("<QIIdd", e))
                    elif not isinstance(e, (weft.NewSession, weft.PublisherGone)):
                        others.append(e)

                until(n, lambda: sub.poll(on, 256) is not None and len(quotes) >= count, "quotes", 60)
            self.assertEqual(others, [])
            self.assertEqual([q[0] for q in quotes], list(range(count)))
            for seq, instrument, _, bid, ask in quotes[:100]:
                self.assertEqual(instrument, seq % 16)
                self.assertAlmostEqual(ask - bid, 0.01)
            self.assertEqual(publisher.wait(60), 0)
            self.assertEqual(gateway.wait(60), 0)
        finally:
            gateway.stdout.close()
            for p in (publisher, gateway):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()


if __name__ == "__main__":
    unittest.main()
