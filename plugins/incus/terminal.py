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
from urllib import parse

from cci_core.errors import BackendError, UsageError
from cci_builtin_plugins.incus.errors import incus_errors
from cci_builtin_plugins.incus.websocket import events_resource, on_stop, open_socket

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pylxd.models import Instance


def attach_terminal(
    instance: Instance,
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
    body = {
        "command": list(argv),
        "environment": {"TERM": os.environ.get("TERM", "xterm-256color"), **environment},
        "wait-for-websocket": True,
        "interactive": True,
        "user": user,
        "group": group,
        "cwd": cwd,
        "width": columns,
        "height": lines,
    }
    client = instance.client
    with incus_errors(f"running {argv[0]} in {instance.name}"):
        response = instance.api["exec"].post(json=body).json()
    operation = response["operation"]
    secrets = response["metadata"]["metadata"]["fds"]
    path = parse.urlparse(client.api.operations[operation.split("/")[-1].split("?")[0]].websocket._api_endpoint).path

    wake_read, wake_write = os.pipe()

    def wake() -> None:  # ends the keyboard loop below; late calls (pipe closed) do nothing
        try:
            os.write(wake_write, b"x")
        except OSError:
            pass

    data = open_socket(client, f"{path}?secret={secrets['0']}", on_data=lambda chunk: os.write(stdout, chunk),
                   on_close=wake)
    control = open_socket(client, f"{path}?secret={secrets['control']}")
    threading.Thread(target=data.run, daemon=True).start()
    # the exec operation ends when the command does, also when the container dies under it
    # (then Incus may never close the websocket): wait on it too
    outcome: dict[str, Any] = {}
    threading.Thread(target=_wait_for_operation, args=(client, operation, outcome, wake), daemon=True).start()
    # and when the container stops under it (poweroff inside), Incus may keep both open: watch its lifecycle
    events = open_socket(client, events_resource(client, "lifecycle"), on_data=on_stop(instance.name, wake))
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
            try:
                socket.close()
            except Exception:  # already closed by the server
                pass
        os.close(wake_read)
        os.close(wake_write)
    finished = outcome.get("done")
    if finished is None:  # the user's terminal closed first: the command may still run
        return 0
    if isinstance(finished, Exception):
        raise BackendError(f"{argv[0]} in {instance.name}: {finished}")
    return int((finished.metadata or {}).get("return", 0))


def _wait_for_operation(client: Any, operation: str, outcome: dict[str, Any], wake: Any) -> None:
    try:
        outcome["done"] = client.operations.wait_for_operation(operation)
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
