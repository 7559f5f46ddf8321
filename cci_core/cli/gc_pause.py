"""The cyclic garbage collector, paused while ``cci`` starts and resumed once a command runs.

Starting ``cci`` imports click, pluggy, the config schema and the plugins: tens of
thousands of long-lived objects and no cyclic garbage worth collecting. The
collector's passes over them cost ``cci plugins list`` 13–29 ms and ``cci --help``
3–8 ms on the reference machine (``benchmarks/startup.py --measures``). The
console script pauses it (:func:`pause`); the root group resumes it as soon as a
command starts to run (:func:`resume`), so a session that runs for hours collects
as usual; ``--help`` and ``--version`` finish before that. The objects made until
then are frozen (``gc.freeze``): later passes skip them.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Turn the collector off, unless the caller already did."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what start-up made and turn the collector back on, if :func:`pause` turned it off.

    A no-op otherwise (under tests, or when the caller turned the collector off).
    """
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
