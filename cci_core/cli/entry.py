"""The ``cci`` console script: the command line, started with the cyclic garbage collector paused.

Starting ``cci`` imports click, pluggy, the config schema and the plugins: tens of
thousands of long-lived objects and no cyclic garbage worth collecting. The
collector's passes over them cost about a tenth of ``cci --help`` on the
reference machine (``benchmarks/startup.py``). The root group calls
:func:`resume_gc` as soon as a command starts to run, so a session that runs
for hours collects as usual; ``--help`` and ``--version`` finish before that.
The objects made until then are frozen (``gc.freeze``): later passes skip them.
"""

from __future__ import annotations

import gc

_paused = False


def main() -> None:
    """Console-script entry point (``cci`` and ``claude-code-isolated``; ``python -m cci_core`` is none: docs/cli.md)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True
    from cci_core.cli.main import main as run

    run()


def resume_gc() -> None:
    """Freeze what start-up made and turn the collector back on, if :func:`main` paused it.

    A no-op otherwise (under tests, or when the caller turned the collector off).
    """
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
