"""After an attach that tmux did not end with a detach, Incus's word on the container decides what cci does."""

from __future__ import annotations

import pytest

from cci_core.errors import CciError
from cci_core.session_attach import QUICK_STOP, STOP_WAIT, AttachOutcome, Left, after_cut_off
from tests.fakes import FakeContainer


class Stopping(FakeContainer):
    """``wait_stopped`` answers from a script, and records the timeouts it was given."""

    def __init__(self, *answers: bool) -> None:
        super().__init__("cci-0-1")
        self.answers = list(answers)
        self.waits: list[float] = []

    def wait_stopped(self, timeout: float = 60) -> bool:
        self.waits.append(timeout)
        return self.answers.pop(0)


class Tmux:
    def __init__(self, runs: bool | None) -> None:
        self.runs = runs

    def exists(self) -> bool:
        if self.runs is None:
            raise CciError("running tmux in cci-0-1: Instance is not running")
        return self.runs


def test_a_quick_stop_ends_the_session_without_a_word() -> None:
    container, said = Stopping(True), []
    assert after_cut_off(container, Tmux(False), "returns", "anew", said.append) is None
    assert container.waits == [QUICK_STOP] and said == []


@pytest.mark.parametrize("runs", [False, None])  # no session, or no exec to ask with
def test_a_slow_stop_without_tmux_is_waited_for_and_said(runs: bool | None) -> None:
    container, said = Stopping(False, True), []
    assert after_cut_off(container, Tmux(runs), "returns", "anew", said.append) is None
    assert container.waits == [QUICK_STOP, STOP_WAIT - QUICK_STOP]
    assert len(said) == 1 and said[0].startswith("waiting for cci-0-1 to stop")


def test_tmux_running_on_means_only_the_attach_was_cut_off() -> None:
    container = Stopping(False)
    outcome = after_cut_off(container, Tmux(True), "returns", "anew")
    assert outcome == AttachOutcome(Left.CUT_OFF, "the attach to cci-0-1 ended without a detach, but its tmux "
                                                  "session runs on: returns")
    assert container.waits == [QUICK_STOP]


def test_a_container_that_never_stops_is_reported_never_called_detached() -> None:
    outcome = after_cut_off(Stopping(False, False), Tmux(False), "returns", "anew")
    assert outcome is not None and outcome.left is Left.NOT_STOPPED
    assert outcome.note.startswith("the tmux session in cci-0-1 ended, but cci-0-1 did not stop within")
    assert "anew" in outcome.note and "detached" not in outcome.note
