"""A growing pause between attempts, for states the backend offers no event for (an instance free again, an init
that can fork commands, a session's end done elsewhere): doubling from ``first`` up to 0.5 s, until a deadline."""

from __future__ import annotations

import time


class Backoff:
    """``while ...: if not backoff.pause(): give up`` -- pauses while ``timeout`` seconds have not passed."""

    def __init__(self, timeout: float, first: float = 0.02) -> None:
        self._deadline = time.monotonic() + timeout
        self._pause = first

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self._deadline

    def pause(self) -> bool:
        """Sleep the next pause and return True; False at once when it would end past the deadline."""
        if time.monotonic() + self._pause > self._deadline:
            return False
        time.sleep(self._pause)
        self._pause = min(self._pause * 2, 0.5)
        return True
