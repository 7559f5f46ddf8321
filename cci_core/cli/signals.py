"""SIGTERM and SIGHUP unwind like Ctrl+C (so `finally` blocks clean up); a cleanup can ignore all three."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside this block a killed terminal (SIGHUP) or ``kill`` (SIGTERM) unwinds like Ctrl+C."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: the most a cleanup that ignores Ctrl+C should take (waiting for Incus, deleting a tree)
CLEANUP_SECONDS = 60.0


@contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """Inside this block Ctrl+C, SIGTERM and SIGHUP are ignored: a cleanup runs to its end.

    Keep the block bounded (see :data:`CLEANUP_SECONDS`). Outside the main thread it changes nothing.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
