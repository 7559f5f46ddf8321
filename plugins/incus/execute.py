"""Run a command in an Incus instance: the exec API, its websockets, and the command's exit code.

Incus starts the command once every websocket of the exec operation is
connected: stdin (closed at once, so the command reads end-of-file, or fed from a
stream: its close is the end of file), stdout, stderr and control (a
``{"command": "signal", "signal": N}`` message signals the command). Output arrives
in binary messages; an empty message or a close ends each stream. The operation's
``return`` is the exit code, 128 + N for a command signal N killed.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, BinaryIO, TypeVar
from urllib import parse

from cci_core.api import Backoff, ExecResult, OutputHandler, RunningCommand
from cci_builtin_plugins.incus.errors import APIError
from cci_builtin_plugins.incus.rest import IncusAPI, quote
from cci_builtin_plugins.incus.websocket import close_quietly

_T = TypeVar("_T")

#: how long an exec keeps being retried while the container's init cannot fork commands yet
NOT_READY_TIMEOUT = 30.0
#: how long output may trail behind the end of the command
DRAIN_TIMEOUT = 10.0
#: how long output may trail behind an exec Incus lost track of, before it is made again
LOST_DRAIN_TIMEOUT = 1.0
#: the most of a command's standard input read at once (and sent in one message)
INPUT_CHUNK = 64 * 1024


class ExecStart:
    """A started exec operation: its URL and the secret of each websocket."""

    def __init__(self, api: IncusAPI, instance: str, body: Mapping[str, Any], action: str) -> None:
        answer = api.start("POST", f"/1.0/instances/{quote(instance)}/exec", action, dict(body))
        self.operation: str = answer["operation"]
        self.secrets: dict[str, str] = answer["metadata"]["metadata"]["fds"]
        self._path = parse.urlsplit(self.operation).path.rstrip("/") + "/websocket"

    def resource(self, fd: str) -> str:
        """The websocket resource of one stream (``"0"``, ``"1"``, ``"2"`` or ``"control"``)."""
        return f"{self._path}?secret={parse.quote(self.secrets[fd])}"


#: the label (``user.cci.exec-groups``) recording whether a container's commands can get their user's groups:
#: :data:`SETPRIV` or :data:`UID_ONLY`; written by cci on the host, out of the agent's reach
GROUPS_LABEL = "exec-groups"
#: the same for every container of an image, as the image property ``"<answer> <image fingerprint>"``: Incus
#: copies it into new containers' config (``image.cci.exec-groups``), so they need no probe; an image published
#: from such a container inherits it with the old fingerprint, which does not count for the new image
GROUPS_PROPERTY = "cci.exec-groups"
SETPRIV, UID_ONLY = "setpriv", "uid-only"
#: run as root once per container: exit 0 when ``setpriv`` can switch users with their groups and ``getent`` works
#: (busybox's setpriv, say, has no --reuid)
GROUPS_PROBE = ("setpriv", "--reuid=0", "--regid=0", "--init-groups", "--", "getent", "passwd", "0")

#: ``sh -c`` script run as root with ``UID --reuid=UID --regid=GID -- COMMAND...``: the terminal (if any) becomes
#: the user's, as Incus does when it switches itself; ``--init-groups`` needs the uid in the user database,
#: a uid without an entry gets no supplementary groups (``--clear-groups``), as before
_SWITCH_USER = (
    'if [ -t 0 ]; then chown -- "$1" /proc/self/fd/0 2>/dev/null; fi; '
    'if getent passwd "$1" >/dev/null; then shift; set -- --init-groups "$@"; '
    'else shift; set -- --clear-groups "$@"; fi; '
    'exec setpriv "$@"'
)
#: what Incus adds to the environment of a command run as root when the request does not set it
_ROOT_DEFAULTS = ("HOME", "USER")


def switch_user(argv: Sequence[str], user: int, group: int, environment: Mapping[str, str]) -> list[str]:
    """``argv`` as root runs it: ``setpriv`` switching to ``user``:``group`` with the user's groups.

    The command's environment stays what it would have been had Incus switched:
    the variables Incus adds for root alone are unset again.
    """
    unset = [name for name in _ROOT_DEFAULTS if name not in environment]
    script = (f"unset {' '.join(unset)}; " if unset else "") + _SWITCH_USER
    return ["/bin/sh", "-c", script, "cci-switch-user", str(user), f"--reuid={user}", f"--regid={group}", "--",
            *argv]


def exec_body(argv: Sequence[str], *, user: int, group: int, environment: Mapping[str, str],
              cwd: str | None, interactive: bool, user_groups: bool = False) -> dict[str, Any]:
    """The exec request for ``argv`` run as ``user``:``group`` with exactly ``environment``.

    With ``user_groups`` (the container has ``setpriv``), a user other than root also gets
    its supplementary groups: see :func:`switch_user`.
    """
    if user_groups and user != 0:
        argv, user, group = switch_user(argv, user, group, environment), 0, 0
    body: dict[str, Any] = {
        "command": list(argv),
        "environment": dict(environment),
        "wait-for-websocket": True,
        "interactive": interactive,
        "user": user,
        "group": group,
    }
    if cwd:
        body["cwd"] = cwd
    return body


def run_command(api: IncusAPI, instance: str, argv: Sequence[str], *, user: int = 0, group: int = 0,
                environment: Mapping[str, str] | None = None, cwd: str | None = None,
                stdout: OutputHandler | None = None, stderr: OutputHandler | None = None,
                user_groups: bool = False) -> ExecResult:
    """Run ``argv`` without a terminal, streaming its output to the handlers; its output and exit code.

    ``user_groups``: see :func:`exec_body`.
    """
    action = f"running {argv[0] if argv else '?'} in {instance}"
    body = exec_body(argv, user=user, group=group, environment=environment or {}, cwd=cwd, interactive=False,
                     user_groups=user_groups)
    return _run_once(api, instance, body, action, stdout, stderr)  # (made again as IncusCommand says)


def is_not_ready(exc: BaseException) -> bool:
    """Whether an exec failed as Incus fails some right after a start: the init could not fork it yet, or Incus lost
    track of it (it may have run). Made again only where that is harmless: see :func:`when_ready`'s callers."""
    return isinstance(exc, APIError) and "Failed to retrieve PID of executing child process" in exc.detail


def when_ready(attempt: Callable[[], _T]) -> _T:
    """``attempt()``, made again while it fails with :func:`is_not_ready`: Incus offers no event for "ready",
    so with a growing pause, up to :data:`NOT_READY_TIMEOUT`."""
    backoff = Backoff(NOT_READY_TIMEOUT)
    while True:
        try:
            return attempt()
        except APIError as exc:
            if not is_not_ready(exc) or not backoff.pause():
                raise


def _run_once(api: IncusAPI, instance: str, body: Mapping[str, Any], action: str,
              stdout: OutputHandler | None, stderr: OutputHandler | None) -> ExecResult:
    command = IncusCommand(api, instance, body, action, None, stdout, stderr)
    code = command.wait()
    return ExecResult(code, command.streams["1"].text(), command.streams["2"].text())


def start_command(api: IncusAPI, instance: str, argv: Sequence[str], *, user: int = 0, group: int = 0,
                  environment: Mapping[str, str] | None = None, cwd: str | None = None,
                  stdin: BinaryIO | None = None, stdout: OutputHandler | None = None,
                  stderr: OutputHandler | None = None, user_groups: bool = False) -> IncusCommand:
    """Start ``argv`` without a terminal, ``stdin`` fed to it as it reads, its output streamed to the handlers.

    It is made again when Incus loses track of it at once only while none of its input is lost: see
    :class:`IncusCommand`.
    """
    action = f"running {argv[0] if argv else '?'} in {instance}"
    body = exec_body(argv, user=user, group=group, environment=environment or {}, cwd=cwd, interactive=False,
                     user_groups=user_groups)
    return IncusCommand(api, instance, body, action, stdin, stdout, stderr)


class IncusCommand(RunningCommand):
    """One exec without a terminal: its websockets connected (so it runs), its input fed by a :class:`_Pump`.

    When Incus loses track of it at once (:func:`is_not_ready`) before any of its output came, and before any
    of its input was read or with an input that can be given again from where it began (see :meth:`_Pump.hold`),
    it is started again, as :func:`when_ready` does; else that failure is reported.
    """

    def __init__(self, api: IncusAPI, instance: str, body: Mapping[str, Any], action: str,
                 stdin: BinaryIO | None, stdout: OutputHandler | None, stderr: OutputHandler | None) -> None:
        self._api, self._instance, self._body, self._action = api, instance, body, action
        self._handlers = (stdout, stderr)
        self._pump = _Pump(stdin) if stdin is not None else None
        self._lock = threading.Lock()  # signals come from a signal handler
        self._launch()

    def _launch(self) -> None:
        self._started = ExecStart(self._api, self._instance, self._body, self._action)
        self.streams = {"1": _Stream(self._handlers[0]), "2": _Stream(self._handlers[1])}
        self._sockets: list[Any] = []
        try:
            for fd, stream in self.streams.items():
                socket = self._api.websocket(self._started.resource(fd), on_data=stream.write,
                                             on_close=stream.done.set)
                self._sockets.append(socket)
                threading.Thread(target=socket.run, daemon=True, name=f"exec-{fd}").start()
            self._control = self._api.websocket(self._started.resource("control"))
            self._sockets.append(self._control)
            input_socket = self._api.websocket(self._started.resource("0"))
            self._sockets.append(input_socket)
        except BaseException:
            self._close()
            raise
        if self._pump is None:
            close_quietly(input_socket)  # no input: the command reads end-of-file
        else:
            self._pump.feed(input_socket)

    def signal(self, signum: int) -> None:
        with self._lock:
            try:
                self._control.send(json.dumps({"command": "signal", "signal": int(signum)}), binary=False)
            except (OSError, ValueError, RuntimeError):
                pass  # it has ended: nothing to signal

    def wait(self) -> int:
        backoff = Backoff(NOT_READY_TIMEOUT)
        while True:
            try:
                outcome = self._api.wait(self._started.operation, self._action)
                for stream in self.streams.values():
                    stream.done.wait(DRAIN_TIMEOUT)
            except APIError as exc:
                for stream in self.streams.values():  # (what it wrote before Incus lost it tells that it ran)
                    stream.done.wait(LOST_DRAIN_TIMEOUT)
                self._close()
                if not is_not_ready(exc) or any(stream.received for stream in self.streams.values()) \
                        or (self._pump is not None and not self._pump.hold()) or not backoff.pause():
                    raise
                self._launch()
                continue
            except BaseException:
                self._close()
                raise
            self._close()
            return int((outcome.get("metadata") or {}).get("return", -1))

    def _close(self) -> None:
        for socket in self._sockets:
            close_quietly(socket)


class _Pump:
    """A command's standard input: what ``source`` gives, sent a chunk as it comes (the socket's pace holds back
    the reading) to the input socket of the command's exec, then that socket closed: the command's end of file.
    A command that ended first closes the socket, which stops the pump.

    A source with a file descriptor is read with ``os.read``: a buffered reader would hold its lock while it
    waits, and the interpreter cannot exit while a thread holds it (cci's own standard input, a terminal).
    A seekable source (a headless run's prompt, a regular file) can be given whole again from where it began."""

    def __init__(self, source: BinaryIO) -> None:
        try:
            fd = source.fileno()
        except (AttributeError, OSError, ValueError):
            self._read = getattr(source, "read1", source.read)
        else:
            self._read = partial(os.read, fd)
        self._rewind = _rewinder(source)
        self._changed = threading.Condition()
        self._reading = threading.Lock()  # a read and a rewind, never both at once
        self._socket: Any = None
        self._generation = 0  # a rewind begins the next: what was read before it is not sent
        self._read_any = self._ended = self._started = False

    def feed(self, socket: Any) -> None:
        """Send to ``socket`` from now on (the exec's input socket; a new one when the exec is made again)."""
        with self._changed:
            self._socket = socket
            if self._ended:
                close_quietly(socket)
            self._changed.notify_all()
            if not self._started:
                self._started = True
                threading.Thread(target=self._run, daemon=True, name="exec-0").start()

    def hold(self) -> bool:
        """Send nothing until :meth:`feed` gives another socket, if nothing was read yet or the source can be
        given again from where it began (then the exec may be made again without losing input); whether it
        holds."""
        with self._changed:
            if self._read_any:
                if self._rewind is None:
                    return False
                with self._reading:
                    self._rewind()
                self._generation += 1
                self._read_any = False
                if self._ended:  # (all of it went to the exec that was lost: a new pump thread gives it again)
                    self._ended = self._started = False
            self._socket = None
            self._changed.notify_all()
            return True

    def _run(self) -> None:
        while (sending := self._next()) is not None:
            generation, socket, chunk = sending
            try:
                socket.send(chunk, binary=True)
            except (OSError, ValueError, RuntimeError):  # the command ended, or its exec was lost
                with self._changed:
                    if generation == self._generation:  # (after a rewind it goes on)
                        self._end()
                        return

    def _next(self) -> tuple[int, Any, bytes] | None:
        """The next chunk to send, with its socket and generation; None once the input has ended (then the pump
        has ended: see :meth:`_end`)."""
        while True:
            with self._changed:
                generation = self._generation
            try:
                with self._reading:
                    chunk = self._read(INPUT_CHUNK)
            except (OSError, ValueError, RuntimeError):
                chunk = b""  # an input that cannot be read ends
            with self._changed:
                if generation != self._generation:
                    continue  # read before a rewind: it comes again
                if not chunk:
                    self._end()
                    return None
                self._read_any = True
                while self._socket is None and generation == self._generation:
                    self._changed.wait()
                if generation == self._generation:
                    return generation, self._socket, chunk

    def _end(self) -> None:
        """The pump's end (the lock held: a rewind comes before it, and is seen, or after it, and starts the pump
        again): the command's end of file."""
        self._ended = True
        if self._socket is not None:
            close_quietly(self._socket, linger=True)  # (the end of the input must reach the command whole)


def _rewinder(source: BinaryIO) -> Callable[[], object] | None:
    """What puts ``source`` back where it is now, or None when it cannot go back (a pipe, a terminal)."""
    try:
        if not source.seekable():
            return None
        at = source.tell()
    except (AttributeError, OSError, ValueError):
        return None
    return partial(source.seek, at)


def probe_user_groups(api: IncusAPI, instance: str) -> str | None:
    """Whether commands in ``instance`` can get their user's groups: :data:`SETPRIV`, :data:`UID_ONLY`,
    or None when the probe itself did not finish (killed, say: nothing to record)."""
    code = run_command(api, instance, GROUPS_PROBE).exit_code
    if code == 0:
        return SETPRIV
    return UID_ONLY if 0 < code < 128 else None


class _Stream:
    """One output stream: passed on to its handler as it arrives, or else kept."""

    def __init__(self, handler: OutputHandler | None) -> None:
        self.handler = handler
        self.chunks: list[bytes] = []
        self.done = threading.Event()
        self.received = False  # (then the command ran)

    def write(self, chunk: bytes) -> None:
        self.received = True
        if self.handler is None:
            self.chunks.append(chunk)
        else:
            self.handler(chunk)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")
