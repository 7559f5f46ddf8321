"""Starting the session's tmux is idempotent: an exec Incus reported as failed may have run."""

from __future__ import annotations

import pytest

from cci_core.driver import ExecResult
from cci_core.errors import CciError
from cci_core.tmux import AttachEnd, TmuxSession
from tests.fakes import FakeContainer


class Racy(FakeContainer):
    """``new-session`` answers "duplicate session"; ``has-session`` says whether one runs."""

    def __init__(self, running: bool) -> None:
        super().__init__("cci-0-1")
        self.running = running

    def exec(self, argv, **kwargs):  # type: ignore[no-untyped-def, override]
        self.commands.append(tuple(argv))
        if argv[1] == "new-session":
            return ExecResult(1, "", "duplicate session: cci\n")
        return ExecResult(0 if self.running else 1, "", "")


def test_a_session_that_exists_after_a_failed_start_counts_as_started() -> None:
    container = Racy(running=True)
    TmuxSession(container, 1000, {}).start(["claude"])
    assert [command[1] for command in container.commands] == ["new-session", "has-session"]


def test_a_failed_start_without_a_session_is_an_error() -> None:
    with pytest.raises(CciError, match="could not start tmux in cci-0-1: duplicate session: cci"):
        TmuxSession(Racy(running=False), 1000, {}).start()


class Attached(FakeContainer):
    """The attached client exits with ``status``; ``has-session`` finds the session, finds none, or cannot run."""

    def __init__(self, status: int, session: bool | None) -> None:
        super().__init__("cci-0-1")
        self.status_code, self.session = status, session

    def attach(self, argv, **kwargs):  # type: ignore[no-untyped-def, override]
        return self.status_code

    def exec(self, argv, **kwargs):  # type: ignore[no-untyped-def, override]
        if self.session is None:
            raise CciError("running tmux in cci-0-1: Instance is not running")
        return ExecResult(0 if self.session else 1, "", "")


@pytest.mark.parametrize(("status", "session", "end"), [
    (0, True, AttachEnd.DETACHED),  # Ctrl+b d: tmux exits 0, the session runs on
    (0, False, AttachEnd.EXITED),  # the last shell exited: tmux exits 0, no session left
    (0, None, AttachEnd.CUT_OFF),  # exit 0, but the container no longer runs commands
    (1, True, AttachEnd.CUT_OFF),  # "[server exited]", "[terminated]": tmux was killed, whatever is left
    (1, False, AttachEnd.CUT_OFF),
    (137, None, AttachEnd.CUT_OFF),  # no exit status: the container stopped under the attach
])
def test_only_a_clean_exit_with_the_session_still_there_is_a_detach(status: int, session: bool | None,
                                                                     end: AttachEnd) -> None:
    assert TmuxSession(Attached(status, session), 1000, {}).attach() is end
