"""SIGTERM and SIGHUP unwind like Ctrl+C (so `finally` blocks clean up); a cleanup can ignore all three."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside this block a killed terminal (SIGHUP) or ``kill`` (SIGTERM) unwinds like Ctrl+C."""
    with _handling((signal.SIGTERM, signal.SIGHUP), _interrupt):
        yield


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
    with _handling((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), signal.SIG_IGN):
        yield


@contextmanager
def _handling(signals: tuple[signal.Signals, ...], handler: Any) -> Iterator[None]:
    """Inside this block ``signals`` go to ``handler``; the handlers before come back after it."""
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
