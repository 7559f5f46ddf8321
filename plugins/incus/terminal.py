"""Attach the user's terminal to a command in a container: an interactive exec over Incus websockets.

Incus gives an interactive exec a data websocket (the pty) and a control
websocket (window size). Keystrokes go from our raw-mode terminal to the data
socket; what the pty writes comes back on it; a SIGWINCH sends the new size.

The exit status is what Incus reports for the command once its output ended.
When the container stops under it (a poweroff inside) Incus may report none:
that counts as :data:`KILLED`, the status of a command killed with its container.

Right after a start, Incus may fail the exec ("Failed to retrieve PID of executing child
process") although a client ran and drew its screen: the attach is then made again, as the
commands of :mod:`.execute` are (what is attached, ``tmux attach-session`` or ``tmux new-session -A``,
only redraws: the second finds the session the first made, and attaches).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cci_core.api import UsageError
from cci_builtin_plugins.incus.execute import ExecStart, exec_body, is_not_ready, when_ready
from cci_builtin_plugins.incus.websocket import close_quietly, on_stop

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cci_builtin_plugins.incus.rest import IncusAPI

#: the exit status of a command that Incus reports none for: killed with its container (as a shell says of SIGKILL)
KILLED = 128 + signal.SIGKILL
#: seconds the exit status may take to follow the end of the command's output
_STATUS_WAIT = 10.0


def attach_terminal(
    api: IncusAPI,
    instance: str,
    argv: Sequence[str],
    *,
    user: int,
    group: int,
    environment: Mapping[str, str],
    cwd: str | None,
    user_groups: bool = False,
    signals: bool = False,
) -> int:
    """Run ``argv`` on a pty in the container with our terminal attached; return its exit code.

    That is :data:`KILLED` when the container stopped under it, and 0 when our terminal closed first.
    ``user_groups``: see :func:`~cci_builtin_plugins.incus.execute.exec_body`. With ``signals`` (a one-shot's
    command), SIGINT, SIGTERM and SIGHUP sent to this process go to the command over the control socket, and
    an exec Incus loses track of at once is reported, not made again (the command may have run).
    """
    if not os.isatty(sys.stdin.fileno()):
        raise UsageError("this needs a terminal (stdin is not a tty)")
    columns, lines = shutil.get_terminal_size()
    environment = {"TERM": os.environ.get("TERM", "xterm-256color"), **environment}
    body = {**exec_body(argv, user=user, group=group, environment=environment, cwd=cwd, interactive=True,
                        user_groups=user_groups),
            "width": columns, "height": lines}
    action = f"running {argv[0]} in {instance}"
    if signals:  # a one-shot's command, which must not run twice: never made again
        return _attach_once(api, instance, body, action, signals)
    return when_ready(lambda: _attach_once(api, instance, body, action, signals))


#: what ``signals`` passes on to the command
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _attach_once(api: IncusAPI, instance: str, body: Mapping[str, Any], action: str, signals: bool) -> int:
    """One interactive exec with our terminal attached (see :func:`attach_terminal`); the :class:`APIError` of
    an exec that Incus lost track of at once (:func:`~cci_builtin_plugins.incus.execute.is_not_ready`)."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    started = ExecStart(api, instance, body, action)

    wake_read, wake_write = os.pipe()

    def wake() -> None:  # ends the keyboard loop below; late calls (pipe closed) do nothing
        try:
            os.write(wake_write, b"x")
        except OSError:
            pass

    data = api.websocket(started.resource("0"), on_data=lambda chunk: os.write(stdout, chunk), on_close=wake)
    control = api.websocket(started.resource("control"))
    threading.Thread(target=data.run, daemon=True).start()
    # the exec operation ends when the command does, also when the container dies under it
    # (then Incus may never close the websocket): wait on it too
    outcome: dict[str, Any] = {}
    settled = threading.Event()  # the exit status is known, or never will be (the container stopped)
    threading.Thread(target=_wait_for_operation, args=(api, started.operation, action, outcome, settled, wake),
                     daemon=True).start()
    # and when the container stops under it (poweroff inside), Incus may keep both open: watch its lifecycle

    def on_stopped() -> None:
        settled.set()
        wake()

    events = api.websocket(api.events_resource("lifecycle"), on_data=on_stop(instance, on_stopped))
    threading.Thread(target=events.run, daemon=True).start()

    def resize(*_: object) -> None:
        width, height = shutil.get_terminal_size()
        control.send(json.dumps({"command": "window-resize", "args": {"width": str(width), "height": str(height)}}))

    def forward(signum: int, _: object) -> None:
        try:
            control.send(json.dumps({"command": "signal", "signal": int(signum)}))
        except (OSError, ValueError, RuntimeError):
            pass  # it has ended

    previous = {signum: signal.signal(signum, handler)
                for signum, handler in ((signal.SIGWINCH, resize), *((s, forward) for s in FORWARDED if signals))}
    closed = False  # our terminal: its end leaves the command running
    try:
        with _raw(stdin):
            while True:
                ready, _, _ = select.select([stdin, wake_read], [], [])
                if wake_read in ready:
                    break
                chunk = os.read(stdin, 65536)
                if not chunk:
                    closed = True
                    break
                data.send(chunk, binary=True)
        if not closed:  # the output ended: Incus reports the exit status once its streams are closed
            for socket in (data, control):
                close_quietly(socket)
            settled.wait(_STATUS_WAIT)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for socket in (data, control, events):
            close_quietly(socket)
        os.close(wake_read)
        os.close(wake_write)
    finished = outcome.get("done")
    if closed and finished is None:  # the user's terminal closed first: the command may still run
        return 0
    if isinstance(finished, Exception) and is_not_ready(finished):
        raise finished
    if finished is None or isinstance(finished, Exception):  # it ended with no status: the container went
        return KILLED
    return int((finished.get("metadata") or {}).get("return", 0))


def _wait_for_operation(api: IncusAPI, operation: str, action: str, outcome: dict[str, Any],
                        settled: threading.Event, wake: Any) -> None:
    try:
        outcome["done"] = api.wait(operation, action)
    except Exception as exc:  # an exec that fails once started: its container stopped under it
        outcome["done"] = exc
    settled.set()
    wake()


@contextmanager
def _raw(fd: int) -> Iterator[None]:
    """Put the terminal in raw mode (keystrokes pass through unchanged) and restore it afterwards."""
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
