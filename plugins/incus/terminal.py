"""Attach the user's terminal to a command in a container: an interactive exec over Incus websockets.

Incus gives an interactive exec a data websocket (the pty) and a control
websocket (window size). Keystrokes go from our raw-mode terminal to the data
socket; what the pty writes comes back on it; a SIGWINCH sends the new size.
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

from cci_core.errors import BackendError, UsageError
from cci_builtin_plugins.incus.execute import ExecStart, exec_body
from cci_builtin_plugins.incus.websocket import close_quietly, on_stop

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cci_builtin_plugins.incus.rest import IncusAPI


def attach_terminal(
    api: IncusAPI,
    instance: str,
    argv: Sequence[str],
    *,
    user: int,
    group: int,
    environment: Mapping[str, str],
    cwd: str | None,
) -> int:
    """Run ``argv`` on a pty in the container with our terminal attached; return its exit code."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    if not os.isatty(stdin):
        raise UsageError("this needs a terminal (stdin is not a tty)")
    columns, lines = shutil.get_terminal_size()
    environment = {"TERM": os.environ.get("TERM", "xterm-256color"), **environment}
    body = {**exec_body(argv, user=user, group=group, environment=environment, cwd=cwd, interactive=True),
            "width": columns, "height": lines}
    action = f"running {argv[0]} in {instance}"
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
    threading.Thread(target=_wait_for_operation, args=(api, started.operation, action, outcome, wake),
                     daemon=True).start()
    # and when the container stops under it (poweroff inside), Incus may keep both open: watch its lifecycle
    events = api.websocket(api.events_resource("lifecycle"), on_data=on_stop(instance, wake))
    threading.Thread(target=events.run, daemon=True).start()

    def resize(*_: object) -> None:
        width, height = shutil.get_terminal_size()
        control.send(json.dumps({"command": "window-resize", "args": {"width": str(width), "height": str(height)}}))

    previous = signal.signal(signal.SIGWINCH, resize)
    try:
        with _raw(stdin):
            while True:
                ready, _, _ = select.select([stdin, wake_read], [], [])
                if wake_read in ready:
                    break
                chunk = os.read(stdin, 65536)
                if not chunk:
                    break
                data.send(chunk, binary=True)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        for socket in (data, control, events):
            close_quietly(socket)
        os.close(wake_read)
        os.close(wake_write)
    finished = outcome.get("done")
    if finished is None:  # the user's terminal closed first: the command may still run
        return 0
    if isinstance(finished, Exception):
        raise BackendError(f"{argv[0]} in {instance}: {finished}")
    return int((finished.get("metadata") or {}).get("return", 0))


def _wait_for_operation(api: IncusAPI, operation: str, action: str, outcome: dict[str, Any], wake: Any) -> None:
    try:
        outcome["done"] = api.wait(operation, action)
    except Exception as exc:  # reported by the caller
        outcome["done"] = exc
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
