"""The streams and signals of ``cci run``'s and ``cci container exec``'s command (:mod:`cci_core.command_io`), as
the command line asks: ``-t/--tty``, ``-T/--no-tty``, or what cci's own input and output are."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from cci_core.errors import UsageError

if TYPE_CHECKING:
    from cci_core.command_io import CommandIO
    from cci_core.driver import OutputHandler

_F = TypeVar("_F", bound=Callable[..., object])


def tty_option(command: _F) -> _F:
    """``-t/--tty`` and ``-T/--no-tty`` (parameter ``tty``: None when neither was given)."""
    return click.option("--tty/--no-tty", "-t/-T", default=None,
                        help="Run the command on a terminal (as when cci's input and output are terminals), or "
                             "with plain pipes (as otherwise).")(command)


def command_io(tty: bool | None, out: OutputHandler | None, err: OutputHandler | None) -> CommandIO:
    """On a terminal when ``tty`` asks, or (None) when cci's input and output are both terminals; else cci's
    standard input fed to the command, its output to ``out`` and ``err``. Signals go to it either way."""
    from cci_core.cli.signals import forwarding
    from cci_core.command_io import CommandIO

    stdin = sys.stdin.buffer if sys.stdin is not None else None
    on_terminal = stdin is not None and stdin.isatty()
    if tty is None:
        tty = on_terminal and sys.stdout is not None and sys.stdout.isatty()
    elif tty and not on_terminal:
        raise UsageError("--tty needs a terminal on standard input", hint="leave it out to run with plain pipes")
    if tty:
        return CommandIO(tty=True, forward=forwarding)
    return CommandIO(stdin=stdin, stdout=out, stderr=err, forward=forwarding)
