"""SIGTERM and SIGHUP unwind like Ctrl+C (so `finally` blocks clean up); a cleanup can ignore all three; while a
one-shot's command runs, the three go to it instead (:func:`forwarding`)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cci_core.driver import RunningCommand


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


#: signals cci passes on to a one-shot's command (``cci run``, ``cci container exec``)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: the signal of these that makes cci stop waiting for a command that outlives the ones before
GIVE_UP_AFTER = 3


@contextmanager
def forwarding(command: RunningCommand) -> Iterator[None]:
    """Inside this block Ctrl+C, SIGTERM and SIGHUP go to ``command`` (as ``incus exec`` passes them on), which
    decides what to do: its exit code tells. The third one in a row unwinds like Ctrl+C instead (the container
    is then ended), for a command that ignores them. Outside the main thread it changes nothing."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = 0

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        if received >= GIVE_UP_AFTER:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        command.signal(signum)

    with _handling(FORWARDED, forward):
        yield
