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
import os
import sys

_paused = False
_started = False


def main() -> None:
    """Console-script entry point (``cci`` and ``claude-code-isolated``; ``python -m cci_core`` is none: docs/cli.md)."""
    global _paused, _started
    _started = True
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


def started_here() -> bool:
    """Whether this process is the ``cci`` command line, started through :func:`main` (not a test or a library)."""
    return _started


def own_command() -> tuple[str, ...]:
    """How to run this cci again (through sudo, sg, or in the image build): its console script when known."""
    script = sys.argv[0]
    if os.path.basename(script) in ("cci", "claude-code-isolated") and os.path.exists(script):
        return (os.path.abspath(script),)
    return (sys.executable, "-c", "from cci_core.cli.entry import main; main()")
