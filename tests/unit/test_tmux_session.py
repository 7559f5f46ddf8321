"""Starting the session's tmux is idempotent: an exec Incus reported as failed may have run."""

from __future__ import annotations

import pytest

from cci_core.driver import ExecResult
from cci_core.errors import CciError
from cci_core.tmux import TmuxSession
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
