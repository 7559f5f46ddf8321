"""``cci run`` returns once its container has stopped and the workspace guard has reported: the save and the delete
are carried on by a detached process, which holds the session from the start; one that never does is replaced by the
next command's reconcile. The session manager with the fake driver and a stand-in for the detached process."""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_record import launcher_id
from tests.unit.test_lifecycle_hooks import Recorder, recorded

#: the launcher label of a process that does not run (this boot, a pid above any pid_max)
GONE = f"{launcher_id().rpartition(':')[0]}:4999999"


class Helper:
    """Stands in for the detached process: its launcher label, whether it was released and what had run then."""

    def __init__(self, launcher: str, recorder: Recorder, sessions: SessionManager) -> None:
        self.launcher, self.recorder, self.sessions = launcher, recorder, sessions
        self.released_after: list[str] | None = None
        self.started: list[tuple[str, bool | None]] = []

    def __call__(self, name: str, delete: bool | None) -> Helper:
        self.started.append((name, delete))
        return self

    def release(self) -> None:
        self.released_after = list(self.recorder.calls)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return workspace


def run_detached(workspace: Path, launcher: str) -> tuple[SessionManager, Recorder, Helper, str]:
    sessions, recorder = recorded(workspace)
    helper = Helper(launcher, recorder, sessions)
    sessions.detached_end = helper
    assert sessions.run(LaunchRequest(workspace), ["true"]) == 0
    [name] = sessions.driver.containers  # type: ignore[attr-defined]
    return sessions, recorder, helper, name


def test_a_run_returns_stopped_and_reported_and_its_helper_saves_and_deletes(workspace: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    helper_id = f"{launcher_id().rpartition(':')[0]}:{4999998}"
    sessions, recorder, helper, name = run_detached(workspace, helper_id)
    container = sessions.driver.get(name)
    # returned: stopped (nothing inside can act), the guard's hook has reported; held by the helper, not deleted
    assert helper.started == [(name, True)] and helper.released_after is not None
    assert recorder.calls[-1] == "cci_session_end deleted=True" and "cci_post_exit_save" not in recorder.calls
    assert container.status() == "stopped"
    labels = container.labels()
    assert (labels["state"], labels["launcher"], labels["previous"]) == ("ending", helper_id, "running")
    # another process (not the helper) leaves it alone: its launcher is alive as far as this test goes
    monkeypatch.setattr("cci_core.session_record.launcher_alive", lambda label: label == helper_id)
    assert sessions.carry_on_end(name, True) is False and sessions.reconcile() == []
    assert sessions.driver.exists(name)
    # the helper carries on: saved, deleted, the end hooks again (they are idempotent)
    monkeypatch.setattr("cci_core.session.launcher_id", lambda: helper_id)
    recorder.calls.clear()
    assert sessions.carry_on_end(name, True) is True
    assert recorder.calls == ["cci_post_exit_save", "cci_session_end deleted=True"]
    assert not sessions.driver.exists(name)


def test_an_end_whose_helper_died_is_ended_by_the_next_command(workspace: Path) -> None:
    sessions, recorder, _helper, name = run_detached(workspace, GONE)
    recorder.calls.clear()
    assert sessions.reconcile() == [name]
    assert recorder.calls == ["cci_post_exit_save", "cci_session_end deleted=True"]
    assert not sessions.driver.exists(name)


def test_a_helper_whose_run_lost_the_end_to_another_process_does_nothing(workspace: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sessions, recorder = recorded(workspace)
    container, _ctx = sessions.launch(LaunchRequest(workspace))
    helper = Helper(GONE, recorder, sessions)
    sessions.detached_end = helper
    original = container.compare_and_set_labels
    monkeypatch.setattr(container, "compare_and_set_labels", lambda expected, labels: False)  # another got there
    assert sessions.finish(container, force=True, delete=True, detach=True) is False
    monkeypatch.setattr(container, "compare_and_set_labels", original)
    # released at once (it leaves), the container left as it was
    assert helper.released_after is not None and container.labels()["state"] == "running"
    monkeypatch.setattr("cci_core.session.launcher_id", lambda: GONE)
    assert sessions.carry_on_end(container.name, True) is False and sessions.driver.exists(container.name)


def test_without_a_helper_a_run_ends_everything_itself(workspace: Path) -> None:
    sessions, recorder = recorded(workspace)
    assert sessions.run(LaunchRequest(workspace), ["true"]) == 0
    assert recorder.calls[-2:] == ["cci_post_exit_save", "cci_session_end deleted=True"]
    assert sessions.driver.containers == {}  # type: ignore[attr-defined]


def test_a_helper_that_cannot_start_leaves_the_end_to_the_run(workspace: Path) -> None:
    sessions, recorder = recorded(workspace)
    warnings: list[str] = []
    sessions.warn = warnings.append

    def no_process(name: str, delete: bool | None) -> Helper:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    sessions.detached_end = no_process
    assert sessions.run(LaunchRequest(workspace), ["true"]) == 0
    assert recorder.calls[-2:] == ["cci_post_exit_save", "cci_session_end deleted=True"]
    assert sessions.driver.containers == {}  # type: ignore[attr-defined]
    assert len(warnings) == 1 and "could not start a process to end it" in warnings[0]


def test_a_container_that_stopped_on_its_own_meanwhile_is_ended_all_the_same(workspace: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.errors import BackendError

    sessions, recorder = recorded(workspace)
    container, _ctx = sessions.launch(LaunchRequest(workspace))
    sessions.detached_end = Helper(GONE, recorder, sessions)

    def stopped_already() -> None:  # (a poweroff inside finished first: Incus refuses the stop)
        container.state = "stopped"  # type: ignore[attr-defined]
        raise BackendError(f"stopping {container.name}: The instance is already stopped")

    monkeypatch.setattr(container, "kill", stopped_already)
    assert sessions.finish(container, force=True, delete=True, detach=True) is True
    assert container.labels()["state"] == "ending" and recorder.calls[-1] == "cci_session_end deleted=True"


def _powered_off(sessions: SessionManager, workspace: Path, *, persistent: bool) -> str:
    """A session launched, attached, and powered off inside while attached: returns its name."""
    from tests.unit.test_lifecycle_hooks import PoweredOff

    launched, _ctx = sessions.launch(LaunchRequest(workspace, persistent=persistent))
    container = PoweredOff(launched.name, launched.labels(), sessions.driver)  # type: ignore[arg-type]
    container.state = "running"
    sessions.driver.containers[launched.name] = container  # type: ignore[attr-defined]
    return launched.name


def test_an_ephemeral_session_that_ends_returns_the_terminal_and_its_helper_saves_and_deletes(
        workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.session_attach import Left

    sessions, recorder = recorded(workspace)
    name = _powered_off(sessions, workspace, persistent=False)
    helper = Helper(GONE, recorder, sessions)
    sessions.detached_end = helper
    recorder.calls.clear()
    outcome = sessions.attach(*sessions.running(name))
    assert outcome == (Left.ENDED, "session ended: saved and deleted in the background")
    assert helper.started == [(name, None)] and "cci_post_exit_save" not in recorder.calls
    assert sessions.driver.get(name).labels()["state"] == "ending"
    monkeypatch.setattr("cci_core.session.launcher_id", lambda: GONE)
    assert sessions.carry_on_end(name) is True
    assert recorder.calls[-2:] == ["cci_post_exit_save", "cci_session_end deleted=True"]
    assert not sessions.driver.exists(name)


def test_a_persistent_session_that_ends_is_saved_before_the_terminal_returns(workspace: Path) -> None:
    """The next 'cci shell' reuses the container: saved, not ending."""
    from cci_core.session_attach import Left

    sessions, recorder = recorded(workspace)
    name = _powered_off(sessions, workspace, persistent=True)
    helper = Helper(GONE, recorder, sessions)
    sessions.detached_end = helper
    outcome = sessions.attach(*sessions.running(name))
    assert outcome == (Left.ENDED, "session ended: saved; container kept") and helper.started == []
    assert sessions.driver.get(name).labels()["state"] == "saved"


def test_a_resume_waits_for_the_save_of_the_session_that_just_ended(workspace: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """'cci shell --continue' right after an ephemeral session ended: the newest session is the one being saved in
    the background, so the resume waits for that end before it looks for it."""
    import cci_core.ends_at_work as ends

    sessions, recorder = recorded(workspace)
    name = _powered_off(sessions, workspace, persistent=False)
    helper_id = f"{launcher_id().rpartition(':')[0]}:{4999997}"
    sessions.detached_end = Helper(helper_id, recorder, sessions)
    sessions.attach(*sessions.running(name))
    def alive(label: str) -> bool:  # the helper lives while its container does
        return label == helper_id and sessions.driver.exists(name)

    monkeypatch.setattr(ends, "launcher_alive", alive)
    monkeypatch.setattr("cci_core.session_record.launcher_alive", alive)
    ended: list[str] = []

    def helper_works(seconds: float) -> None:  # the helper's end, done while the resume waits
        if not ended:
            monkeypatch.setattr("cci_core.session.launcher_id", lambda: helper_id)
            ended.append(name) if sessions.carry_on_end(name) else None

    monkeypatch.setattr("cci_core.backoff.time.sleep", helper_works)
    looked_for: list[bool] = []
    monkeypatch.setattr(SessionManager, "_session_to_resume",
                        lambda self, request, latest: looked_for.append(self.driver.exists(name)) or None)
    sessions.open(LaunchRequest(workspace), latest=True)
    assert ended == [name] and looked_for == [False]  # looked for once the end was done


def test_an_end_at_work_is_waited_for_only_while_its_process_lives(workspace: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import cci_core.ends_at_work as ends

    sessions, recorder, _helper, name = run_detached(workspace, GONE)
    slept: list[float] = []
    monkeypatch.setattr("cci_core.backoff.time.sleep", slept.append)
    assert ends.wait_for_end(sessions.driver, name) is False and slept == []  # its process is dead: no wait
    monkeypatch.setattr(ends, "launcher_alive", lambda label: True)
    assert ends.workspace_ends(sessions.driver.list_containers(), workspace) == [name]
    assert ends.wait_for_end(sessions.driver, name, timeout=0.3) is False and slept  # waited, up to the timeout
    sessions.driver.containers.clear()  # type: ignore[attr-defined]
    assert ends.wait_for_end(sessions.driver, name) is True


def test_an_end_another_process_completes_after_the_listing_is_no_warning(workspace: Path) -> None:
    """Listed while its helper still ended it, gone (that helper's work done) by the time the listing is acted on:
    nothing to do, nothing to warn about (a concurrent 'cci run' warned "could not end ... no container named")."""
    sessions, _recorder, _helper, name = run_detached(workspace, GONE)
    ended, _ctx = sessions.launch(LaunchRequest(workspace, slot=2))
    ended.stop()  # powered off inside, nobody watching: listed as ended
    listing = sessions.driver.list_containers()
    sessions.driver.containers.clear()  # both finished elsewhere meanwhile
    warnings: list[str] = []
    sessions.warn = warnings.append
    assert sorted(sessions.reconcile(listing)) == sorted([name, ended.name])
    assert warnings == []
