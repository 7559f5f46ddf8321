"""The tmux session inside a container: the tool runs in it, users attach to it, automation drives it.

Every call runs as the container user, so it reaches the very tmux server the
session runs in (its socket lives under /tmp/tmux-<uid>/), never root's.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Mapping, Sequence

from cci_core.driver import Container, ExecResult
from cci_core.errors import CciError
from cci_core.layout import WORKSPACE_PATH

SESSION = "cci"


class AttachEnd(enum.Enum):
    """How the user's attach to the session ended, as tmux tells it."""

    DETACHED = "detached"  # tmux let the client go (Ctrl+b d): the session runs on
    EXITED = "exited"  # the session ended by itself (its last shell exited): the tmux server is gone
    CUT_OFF = "cut off"  # anything else: tmux or its client was killed (a poweroff inside), the container went


def _new_session(command: Sequence[str] | None) -> list[str]:
    """``tmux new-session``'s arguments for the session: bash runs ``command``, then stays as an interactive shell."""
    script = f"{shlex.join(command)}; exec bash -l" if command else "exec bash -l"
    return ["-s", SESSION, "-c", WORKSPACE_PATH, "bash", "-lc", script]


class TmuxSession:
    """The ``cci`` tmux session of one container, driven as ``uid``."""

    def __init__(self, container: Container, uid: int, environment: Mapping[str, str]) -> None:
        self.container = container
        self.uid = uid
        self.environment = dict(environment)

    def _tmux(self, *args: str) -> ExecResult:
        return self.container.exec(["tmux", *args], user=self.uid, group=self.uid, environment=self.environment,
                                   cwd=WORKSPACE_PATH)

    def exists(self) -> bool:
        """Whether the session is running."""
        return self._tmux("has-session", "-t", SESSION).exit_code == 0

    def start(self, command: Sequence[str] | None = None) -> None:
        """Start the session: bash runs ``command`` (the tool), then stays as an interactive shell."""
        result = self._tmux("new-session", "-d", *_new_session(command))
        if result.exit_code != 0 and "duplicate session" in result.stderr and self.exists():
            # right after a start, Incus may report an exec as failed ("Failed to retrieve PID") although
            # it ran; the retry then finds the session it made: started, as asked
            return
        if result.exit_code != 0:
            raise CciError(f"could not start tmux in {self.container.name}: {result.stderr.strip()}",
                           hint="the image needs tmux and bash")

    def attach(self, *, new: bool = False, command: Sequence[str] | None = None) -> AttachEnd:
        """Attach the user's terminal until they detach (Ctrl+b d) or the session ends; say which it was.

        With ``new``, the same exec starts the session first (as :meth:`start` with ``command``, at the
        size of the user's terminal; or attaches to one that runs already): one exec less before the
        tool shows. tmux's client exits 0 when it is detached and when the session ends,
        non-zero when it or the server is killed; the session still there tells a
        detach from an end.
        """
        argv = ["new-session", "-A", *_new_session(command)] if new else ["attach-session", "-t", SESSION]
        status = self.container.attach(["tmux", *argv], user=self.uid, group=self.uid,
                                       environment=self.environment, cwd=WORKSPACE_PATH)
        if status != 0:
            return AttachEnd.CUT_OFF
        try:
            return AttachEnd.DETACHED if self.exists() else AttachEnd.EXITED
        except CciError:  # no exec: the container is going away
            return AttachEnd.CUT_OFF

    def send(self, text: str, *, enter: bool = True) -> None:
        """Type ``text`` into the session (literally), then Enter."""
        self._checked("send-keys", "-t", SESSION, "-l", "--", text)
        if enter:
            self._checked("send-keys", "-t", SESSION, "Enter")

    def capture(self, *, history: int = 0) -> str:
        """What the session's pane shows (plus ``history`` lines of scrollback)."""
        start = ["-S", f"-{history}"] if history else []
        return self._checked("capture-pane", "-p", "-t", SESSION, *start).stdout

    def describe(self) -> str:
        """tmux's one-line description of the session, or an empty string when there is none."""
        result = self._tmux("list-sessions", "-F", "#{session_name}: #{session_windows} windows, "
                            "created #{t:session_created}#{?session_attached, (attached),}")
        return result.stdout.strip() if result.exit_code == 0 else ""

    def _checked(self, *args: str) -> ExecResult:
        result = self._tmux(*args)
        if result.exit_code != 0:
            problem = result.stderr.strip() or f"tmux {args[0]} failed"
            raise CciError(f"{self.container.name}: {problem}", hint=f"start one with 'cci attach {self.container.name}'")
        return result
