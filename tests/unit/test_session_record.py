"""The session record reads the labels containers of the current release carry, and writes them back unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_core.session_record import Kind, Mode, SessionRecord, State, is_session

#: labels as the current release writes them (a session, a run, a restart under way, a build)
TODAY = [
    {"kind": "session", "workspace": "/home/u/project", "tool": "claude", "mode": "persistent",
     "session": "0f6c2d8e-3a5b-4c1d-9e7f-123456789abc", "state": "saved", "launcher": "b00t-1d:4242",
     "network": "allowlist", "slot": "2", "previous": "running"},
    {"kind": "run", "workspace": "/w", "tool": "", "mode": "ephemeral", "session": "s", "state": "running",
     "launcher": "b:1", "network": "open", "slot": "1"},
    {"kind": "session", "workspace": "/w", "tool": "claude", "mode": "persistent", "session": "s",
     "state": "launching", "launcher": "b:1", "previous": "saved", "network": "open", "slot": "1"},
    {"kind": "build", "launcher": "b:7"},
]


@pytest.mark.parametrize("labels", TODAY)
def test_todays_labels_round_trip(labels: dict[str, str]) -> None:
    record = SessionRecord.from_labels(labels)
    assert record.to_labels() == labels
    assert SessionRecord.from_labels(record.to_labels()) == record


def test_the_labels_read_as_typed_values() -> None:
    record = SessionRecord.from_labels(TODAY[0])
    assert (record.kind, record.state, record.previous, record.mode) == (Kind.SESSION, State.SAVED, State.RUNNING,
                                                                         Mode.PERSISTENT)
    assert record.slot == 2 and record.persistent and record.is_session
    assert record.owner() == {"state": "saved", "launcher": "b00t-1d:4242"}


def test_the_enums_are_the_label_strings() -> None:
    assert [state.value for state in State] == ["launching", "running", "ending", "saved"]
    assert [kind.value for kind in Kind] == ["session", "run", "build", "pool"]
    assert [mode.value for mode in Mode] == ["persistent", "ephemeral"]
    assert f"{State.SAVED}" == "saved" and State.SAVED == "saved"


@pytest.mark.parametrize("labels", [
    {},
    {"kind": "container", "workspace": "/w", "session": "s"},  # 'cci container launch': not a session
    {"kind": "session", "session": "s"},  # no workspace
    {"kind": "session", "workspace": "/w"},  # no session id
    {"kind": "build", "workspace": "/w", "session": "s"},
])
def test_what_is_not_a_session(labels: dict[str, str]) -> None:
    assert not SessionRecord.from_labels(labels).is_session and not is_session(labels)


def test_missing_and_garbage_values_read_as_none_never_fail() -> None:
    labels = {"kind": "session", "workspace": "/w", "session": "s", "state": "exploded", "mode": "forever",
              "slot": "-1", "previous": "", "unrelated": "x"}
    record = SessionRecord.from_labels(labels)
    assert (record.state, record.mode, record.slot, record.previous, record.launcher) == (None, None, None, None, None)
    assert record.is_session and not record.persistent
    assert record.owner() == {"state": "", "launcher": ""}
    assert record.to_labels() == {"kind": "session", "workspace": "/w", "session": "s"}  # nothing made up
    for slot in ("", "one", "1.5", "²"):
        assert SessionRecord.from_labels({"slot": slot}).slot is None


def test_orphans_are_named_by_why() -> None:
    dead = "not-this-boot:1"
    assert SessionRecord(kind=Kind.BUILD, launcher=dead).orphaned() == "the 'cci build' that made it is gone"
    assert SessionRecord(kind=Kind.SESSION, state=State.LAUNCHING, previous=State.SAVED, launcher=dead).orphaned() \
        == "its restart was interrupted: stop it and keep it saved"
    assert SessionRecord(kind=Kind.RUN, state=State.RUNNING, launcher=dead).orphaned() \
        == "the 'cci run' that started it is gone"
    assert SessionRecord(kind=Kind.SESSION, state=State.RUNNING, launcher=dead).orphaned() is None
    assert SessionRecord(kind=Kind.SESSION, state=State.SAVED, mode=Mode.PERSISTENT).orphaned() is None


def test_a_garbage_slot_label_does_not_break_a_rebuilt_context(tmp_path: Path) -> None:
    """'²' is a digit to str.isdigit() but not to int(): 'cci list' and every rebuilt context failed on it."""
    from tests.unit.test_saved_sessions import manager

    ctx = manager(tmp_path).context("cci-0-1", {"kind": "session", "workspace": "/w", "session": "s", "slot": "²"})
    assert ctx.slot == 0


def test_a_launcher_is_alive_while_its_process_runs_and_not_once_it_exited_even_unreaped() -> None:
    import os
    import time

    from cci_core.session_record import launcher_alive, launcher_id

    boot = launcher_id().rpartition(":")[0]
    assert launcher_alive(launcher_id())
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while launcher_alive(f"{boot}:{pid}") and time.monotonic() < deadline:
            time.sleep(0.01)
        # a zombie (no one reaped it yet: a detached end whose parent's parent never reaps) is gone all the same
        assert not launcher_alive(f"{boot}:{pid}")
        assert os.waitpid(pid, os.WNOHANG)[0] == pid  # it was a zombie until now
    finally:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    assert not launcher_alive(f"{boot}:{pid}") and not launcher_alive(f"another-boot:{os.getpid()}")
