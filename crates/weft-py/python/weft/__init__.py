"""weft for Python: shared-memory and reliable UDP multicast channels.

    import weft
    with weft.Node('threading = "invoker"') as node:
        pub = node.publication("shm:quotes", 1)
        sub = node.subscription("shm:quotes", 1)
        pub.offer(b"hello")                      # False: back-pressured, try again
        node.do_work()
        sub.poll(lambda m: print(bytes(m)))      # m: a View of the ring, in place

docs/bindings.md has the rules: views are valid only inside their callback
or claim; errors are weft.Error(code_name, message).
"""
from contextlib import contextmanager

from ._weft import (  # noqa: F401  (re-exported)
    Error,
    Loss,
    NewSession,
    Node,
    Publication,
    PublisherGone,
    Subscription,
    View,
)

__all__ = [
    "Error",
    "Loss",
    "NewSession",
    "Node",
    "Publication",
    "PublisherGone",
    "Subscription",
    "View",
    "claim",
]


@contextmanager
def claim(publication, length):
    """Claims `length` bytes of `publication` for writing in place.

    Yields a writable View (use memoryview(v) or numpy.frombuffer(v, ...)),
    or None when back-pressured or not connected (nothing is claimed then).
    Leaving the block commits the message; an exception in it aborts it, so
    subscribers never see a half-written message.
    """
    view = publication.try_claim(length)
    if view is None:
        yield None
        return
    try:
        yield view
    except BaseException:
        publication.abort()
        raise
    publication.commit()
