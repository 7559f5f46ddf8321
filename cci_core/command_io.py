"""How a one-shot's command meets cci's own streams and signals: ``cci run`` and ``cci container exec``.

Its standard input is cci's, fed to it as it reads; its output streams back, stdout and stderr apart; or,
when cci's input and output are terminals (or ``--tty``), it runs on a terminal attached to cci's (the window
size follows, Ctrl+C reaches it as a keystroke). SIGINT, SIGTERM and SIGHUP sent to cci go to it while it runs
(:func:`cci_core.cli.signals.forwarding`), as ``incus exec`` passes them on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

if TYPE_CHECKING:
    from cci_core.driver import Container, OutputHandler, RunningCommand


class CommandIO(NamedTuple):
    """How a one-shot's command meets cci's own streams and signals.

    :param stdin: fed to the command as it reads, its end the command's end of file (None: none).
    :param stdout, stderr: where its output goes, as it comes.
    :param tty: the command runs on a terminal attached to cci's (then ``stdin``, ``stdout`` and ``stderr``
        are that terminal's, and Ctrl+C reaches it as a keystroke).
    :param forward: while it runs, what passes the signals cci gets on to it (see
        :func:`cci_core.cli.signals.forwarding`); None: they unwind cci, which ends the container.
    """

    stdin: BinaryIO | None = None
    stdout: OutputHandler | None = None
    stderr: OutputHandler | None = None
    tty: bool = False
    forward: Callable[[RunningCommand], AbstractContextManager[object]] | None = None


def run_command(container: Container, argv: Sequence[str], *, user: int = 0, group: int | None = None,
                environment: Mapping[str, str] | None = None, cwd: str | None = None, io: CommandIO) -> int:
    """Run ``argv`` in ``container`` as ``user`` (and ``group``, default ``user``), as ``io`` says; its exit code
    (128 + N when signal N killed it)."""
    group = user if group is None else group
    if io.tty:
        return container.attach(list(argv), user=user, group=group, environment=environment, cwd=cwd,
                                signals=io.forward is not None)
    command = container.start_command(list(argv), user=user, group=group, cwd=cwd, environment=environment,
                                      stdin=io.stdin, stdout=io.stdout, stderr=io.stderr)
    with io.forward(command) if io.forward is not None else contextlib.nullcontext():
        return command.wait()
