"""The ``cci`` console script: the command line, started with the cyclic garbage collector paused
(:mod:`cci_core.cli.gc_pause`)."""

from __future__ import annotations

import os
import sys

from cci_core.cli import gc_pause

_started = False


def main() -> None:
    """Console-script entry point (``cci`` and ``claude-code-isolated``; ``python -m cci_core`` is none: docs/cli.md)."""
    global _started
    _started = True
    gc_pause.pause()
    from cci_core.cli.main import main as run

    run()


def started_here() -> bool:
    """Whether this process is the ``cci`` command line, started through :func:`main` (not a test or a library)."""
    return _started


def own_command() -> tuple[str, ...]:
    """How to run this cci again (through sudo, sg, or in the image build): its console script when known."""
    script = sys.argv[0]
    if os.path.basename(script) in ("cci", "claude-code-isolated") and os.path.exists(script):
        return (os.path.abspath(script),)
    return (sys.executable, "-c", "from cci_core.cli.entry import main; main()")
