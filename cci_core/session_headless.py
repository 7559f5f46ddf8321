"""Headless runs (``cci run --prompt``), and how every ``cci run`` runs its command to the end.

A headless run is a session like any other (kind ``session``, the configured tool, credentials
in, ephemeral), but the tool runs once, non-interactively: its
:meth:`~cci_core.tool.ToolAdapter.headless_command`, the prompt fed to its standard input as it
reads (nothing is written into the container for it, and an exec the driver has to make again gets
the whole prompt again: it is in memory). Its output is streamed, stdout and stderr apart; afterwards the session is ended like any other
(saved, then deleted), and cci's exit code is the tool's.

Both ``cci run -- CMD`` and a headless run stop at the session duration limit
(``[limits] duration``): the container is stopped, the exit code is 124 (as ``timeout(1)``),
one line says why, and the session is saved as at any other end.
"""

from __future__ import annotations

import os
import stat
from io import BytesIO
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, NamedTuple, Protocol

from cci_core.command_io import CommandIO, run_command
from cci_core.errors import CciError, UsageError
from cci_core.layout import WORKSPACE_PATH
from cci_core.limits import TIMEOUT_EXIT, StopAtDeadline, ended_by_duration

if TYPE_CHECKING:
    from cci_core.context import LaunchContext
    from cci_core.driver import Container, Driver, OutputHandler
    from cci_core.tool import ToolAdapter

#: the largest prompt cci passes (a prompt is instructions, not data: put data into the workspace)
MAX_PROMPT = 1 << 20


class Sessions(Protocol):
    """What a run needs of the session object (:class:`cci_core.session.SessionManager`)."""

    driver: Driver

    def user_environment(self, ctx: LaunchContext) -> dict[str, str]: ...

    def finish(self, container: Container, *, force: bool = False, timeout: int = 60,
               delete: bool | None = None, detach: bool = False) -> bool: ...


class Prompt(NamedTuple):
    """What a headless run asks: the prompt, and whether the tool's structured output is wanted (``--format json``)."""

    text: bytes
    structured: bool = False


def read_prompt(text: str | None, path: str | None, stdin: IO[bytes]) -> bytes:
    """The prompt of ``--prompt TEXT`` or ``--prompt-file PATH`` (``-``: ``stdin``), at most :data:`MAX_PROMPT` bytes.

    A file that is not a readable regular file (a FIFO would block, a directory has no
    text), an oversized or an empty prompt is a :class:`UsageError`.
    """
    if text is not None and path is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if text is not None:
        prompt = text.encode()
    elif path == "-":
        prompt = stdin.read(MAX_PROMPT + 1)
    elif path is not None:
        prompt = _read_file(path)
    else:
        raise UsageError("no prompt given", hint="use --prompt TEXT or --prompt-file FILE")
    if len(prompt) > MAX_PROMPT:
        raise UsageError(f"the prompt is over {MAX_PROMPT >> 20} MiB", hint="put large inputs into the workspace and "
                                                                          "name them in the prompt")
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    return prompt


def _read_file(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read the prompt file {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"the prompt file {path} is not a regular file")
        if info.st_size > MAX_PROMPT:
            raise UsageError(f"the prompt file {path} is over {MAX_PROMPT >> 20} MiB",
                             hint="put large inputs into the workspace and name them in the prompt")
        chunks, size = [], 0
        while size <= MAX_PROMPT and (chunk := os.read(fd, MAX_PROMPT + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise UsageError(f"cannot read the prompt file {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def headless_command(tool: ToolAdapter, session_id: str, *, resume: bool, structured: bool) -> list[str]:
    """The tool's headless argv; a :class:`UsageError` for a tool that has none."""
    argv = tool.headless_command(session_id, resume=resume, structured=structured)
    if argv is None:
        raise UsageError(f"the tool {tool.name} has no headless mode, so 'cci run --prompt' cannot run it",
                         hint="use 'cci shell', or 'cci run -- CMD'")
    return list(argv)


def run_headless(manager: Sessions, container: Container, ctx: LaunchContext, prompt: Prompt, *, resume: bool,
                 stdout: OutputHandler | None = None, stderr: OutputHandler | None = None,
                 say: Callable[[str], None] = lambda line: None) -> int:
    """Run the session's tool headless in its container, just opened for it (see :meth:`SessionManager.run_prompt
    <cci_core.session.SessionManager.run_prompt>`); its exit code. The session is ended afterwards whatever
    happens (saved, then deleted); ``say`` gets the line that tells how to continue it."""
    try:
        assert ctx.tool is not None  # a session's
        argv = headless_command(ctx.tool, ctx.session_id, resume=resume, structured=prompt.structured)
    except BaseException:
        manager.finish(container, force=True)
        raise
    io = CommandIO(stdin=BytesIO(prompt.text), stdout=stdout, stderr=stderr)
    code = run_to_end(manager, container, ctx, argv, io=io, say=say)
    say(f"session {ctx.session_id} saved: 'cci shell --resume={ctx.session_id}' continues it "
        f"('cci run --resume={ctx.session_id} --prompt ...' headless)")
    return code


def run_to_end(manager: Sessions, container: Container, ctx: LaunchContext, argv: Sequence[str], *,
               stdout: OutputHandler | None = None, stderr: OutputHandler | None = None,
               say: Callable[[str], None] = lambda line: None, delete: bool | None = None,
               detach: bool = False, io: CommandIO | None = None) -> int:
    """Run ``argv`` as the container user in the workspace until it exits, or until the session's deadline
    (``[limits] duration``, recorded on the container at its launch) stops the container; then end the session
    (saved; deleted unless persistent, or as ``delete`` says; with ``detach``, the save and the delete go on
    after this returns: see :meth:`SessionManager.finish <cci_core.session.SessionManager.finish>`).

    Its exit code (128 + N when signal N killed it), or 124 (:data:`~cci_core.limits.TIMEOUT_EXIT`) when the
    deadline ended it (``say`` tells why), whoever stopped the container then: this process, or the timer inside
    that powers it off. ``io`` (else ``stdout`` and ``stderr``, no input) says how it meets cci's streams.
    """
    from cci_core.session_record import SessionRecord

    io = io or CommandIO(stdout=stdout, stderr=stderr)
    uid = manager.driver.container_uid
    try:
        with StopAtDeadline(container, SessionRecord.from_labels(container.labels()).deadline) as deadline:
            try:
                code = run_command(container, argv, user=uid, environment=manager.user_environment(ctx),
                                   cwd=WORKSPACE_PATH, io=io)
            except CciError:
                if not deadline.passed:
                    raise
            timed_out = deadline.passed
    finally:
        manager.finish(container, force=True, delete=delete, detach=detach)
    if timed_out:
        say(ended_by_duration(container.name))
        return TIMEOUT_EXIT
    return code

