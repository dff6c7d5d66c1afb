"""Small process helpers shared by the local control plane and its stand-ins."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import threading
from collections.abc import Iterator

_PR_SET_PDEATHSIG = 1
# Loaded before any fork: dlopen in a forked child of a threaded process can deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGTERM when the thread that forked it exits, so nothing
    outlives the runner that started it."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def until_signal() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs; the old handlers come back."""
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
