"""A terminal on the host for driving interactive cci commands: a tmux server of our own, keys in, screen out."""

from __future__ import annotations

import shlex
import subprocess
import time


class Terminal:
    """A host tmux server of our own with one window running a command: our user's terminal."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False)
        if result.returncode:
            raise AssertionError(f"host tmux {args[0]} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def start(self, window: str, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
        script = f"env -i {exports} {command}; echo CCI-EXITED-$?; sleep 600"
        self.tmux("new-session", "-d", "-s", window, "-x", "120", "-y", "30", script)

    def keys(self, window: str, *keys: str) -> None:
        self.tmux("send-keys", "-t", window, *keys)

    def screen(self, window: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", window, "-S", "-100")

    def wait_for(self, window: str, text: str, timeout: float = 60) -> str:
        """Wait until ``text`` is on the screen (polls the screen; fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(window)
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear within {timeout} s; the screen shows:\n{screen}")
            time.sleep(0.2)

    def kill_command(self, window: str) -> None:
        """``kill -9`` the command started in ``window`` (the pane's shell survives and reports the exit)."""
        shell_pid = self.tmux("display-message", "-p", "-t", window, "#{pane_pid}").strip()
        children = subprocess.run(["pgrep", "-P", shell_pid], capture_output=True, text=True, check=True)
        for pid in children.stdout.split():
            subprocess.run(["kill", "-9", pid], check=True)
