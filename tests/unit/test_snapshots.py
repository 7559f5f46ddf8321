"""Snapshots of persistent session containers: the core's rules (cci_core/snapshots.py) with the fake driver, and the
configuration the Incus side keeps across a restore (plugins/incus/snapshots.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cci_core import hookimpl, snapshots
from cci_core.config import Override, load_config
from cci_core.errors import CciError, NotFoundError, UsageError
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_record import SessionRecord
from cci_builtin_plugins.incus.snapshots import kept_config, taken_at
from tests.fakes import FakeContainer, FakeDriver
from tests.unit.test_saved_sessions import Plugin

HOME_FILE = "/home/code/notes.txt"


class SaveRecorder:
    """Records what the container held at each end-of-session save."""

    def __init__(self) -> None:
        self.saved: list[bytes | None] = []

    @hookimpl
    def cci_post_exit_save(self, ctx, container):  # type: ignore[no-untyped-def]
        self.saved.append(container.files.get(HOME_FILE, (None,))[0])


def sessions(workspace: Path, *plugins: object, **defaults: object) -> SessionManager:
    overrides = [Override("defaults.driver", "fake", "test"), Override("tool.name", "demo", "test"),
                 Override("defaults.persistent", True, "test"),
                 *(Override(f"defaults.{key}", value, "test") for key, value in defaults.items())]
    config = load_config(workspace, environ={}, overrides=overrides)
    extra = [("demo", Plugin()), *((f"x{index}", plugin) for index, plugin in enumerate(plugins))]
    return SessionManager(config, FakeDriver(config), load_plugins(entry_points=False, extra=extra))


def saved(manager: SessionManager, workspace: Path, *, persistent: bool = True) -> FakeContainer:
    """A session launched and ended: stopped, and saved when persistent (else deleted: launched again, running)."""
    container, _ctx = manager.launch(LaunchRequest(workspace, persistent=persistent))
    assert isinstance(container, FakeContainer)
    if persistent:
        assert manager.finish(container) and container.labels()["state"] == "saved"
    return container


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return workspace


# --- names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "before-refactor", "v1.2_rc3", "x" * 64, "2026"])
def test_a_good_name_is_taken(name: str) -> None:
    snapshots.check_name(name)


@pytest.mark.parametrize("name", ["", "a b", "-a", "a-", ".a", "a/b", "a?b", "a&b", "a+b", "a'b", "x" * 65, "caf\u00e9",
                                  "a\nb", "a\x1bb"])
def test_a_name_incus_refuses_is_one_line(name: str) -> None:
    with pytest.raises(UsageError, match="is not valid: use 1 to 64 letters") as caught:
        snapshots.check_name(name)
    assert "\n" not in str(caught.value).replace(repr(name), "")


def test_the_automatic_prefix_is_cci_s() -> None:
    with pytest.raises(UsageError, match="starts with 'auto-', which marks cci's automatic snapshots"):
        snapshots.check_name("auto-20261203-190501")
    assert snapshots.is_automatic("auto-20261203-190501") and snapshots.is_automatic("auto-20261203-190501-2")
    assert not snapshots.is_automatic("auto-mine") and not snapshots.is_automatic("snap-20261203-190501")


# --- create ------------------------------------------------------------------------------------------------


def test_create_on_a_saved_container_keeps_its_labels_and_records_it_held(workspace: Path) -> None:
    manager = sessions(workspace)
    container = saved(manager, workspace)
    labels = container.labels()
    taken = snapshots.create(manager, container.name, "before")
    assert taken.name == "before"
    assert container.labels() == labels
    # the snapshot holds the container as cci held it: never 'saved', which a restore would show to a reuse
    recorded = container.snapshot_files["before"][2]
    assert (recorded["state"], recorded["previous"]) == ("ending", "saved")


def test_create_on_a_running_container_gives_it_back_running(workspace: Path) -> None:
    manager = sessions(workspace)
    container, _ctx = manager.launch(LaunchRequest(workspace))
    record = SessionRecord.from_labels(container.labels())
    snapshots.create(manager, container.name, "live")
    assert SessionRecord.from_labels(container.labels()) == record and container.status() == "running"


def test_create_without_a_name_makes_up_sortable_ones(workspace: Path) -> None:
    manager = sessions(workspace)
    container = saved(manager, workspace)
    first = snapshots.create(manager, container.name)
    second = snapshots.create(manager, container.name)
    assert re.fullmatch(r"snap-\d{8}-\d{6}", first.name)
    assert first.name != second.name and sorted([second.name, first.name]) == [first.name, second.name]


def test_create_refuses_a_name_that_exists_and_changes_nothing(workspace: Path) -> None:
    manager = sessions(workspace)
    container = saved(manager, workspace)
    snapshots.create(manager, container.name, "one")
    labels = container.labels()
    with pytest.raises(UsageError, match=f"{container.name} already has a snapshot 'one'"):
        snapshots.create(manager, container.name, "one")
    assert list(container.snapshot_files) == ["one"] and container.labels() == labels


def test_create_refuses_a_container_another_cci_command_works_on(workspace: Path) -> None:
    manager = sessions(workspace)
    container = saved(manager, workspace)
    container.set_labels({"state": "launching"})
    with pytest.raises(UsageError, match="is being started or ended by another cci command"):
        snapshots.create(manager, container.name, "one")
    assert not container.snapshot_files and container.labels()["state"] == "launching"


def test_ephemeral_missing_and_foreign_containers_are_one_line_each(workspace: Path) -> None:
    manager = sessions(workspace)
    ephemeral = saved(manager, workspace, persistent=False)
    foreign = FakeContainer("mine", {"owner": "me"}, manager.driver)  # type: ignore[arg-type]
    manager.driver.containers["mine"] = foreign  # type: ignore[attr-defined]
    for action in (lambda name: snapshots.create(manager, name, "x"),
                   lambda name: snapshots.snapshots(manager, name),
                   lambda name: snapshots.restore(manager, name, "x"),
                   lambda name: snapshots.delete(manager, name, "x")):
        with pytest.raises(UsageError, match="is an ephemeral session container: only persistent ones"):
            action(ephemeral.name)
        with pytest.raises(UsageError, match="mine is not a cci session container; cci leaves it alone"):
            action("mine")
        with pytest.raises(NotFoundError, match="no container named 'gone'"):
            action("gone")
    assert not ephemeral.snapshot_files and not foreign.snapshot_files


# --- restore -----------------------------------------------------------------------------------------------


def test_restore_puts_the_files_back_keeps_the_labels_and_saves_the_session_again(workspace: Path) -> None:
    recorder = SaveRecorder()
    manager = sessions(workspace, recorder)
    container = saved(manager, workspace)
    container.push_file(HOME_FILE, b"before")
    snapshots.create(manager, container.name, "good")
    container.push_file(HOME_FILE, b"after")
    labels = container.labels()
    recorder.saved.clear()

    snapshots.restore(manager, container.name, "good")
    assert container.files[HOME_FILE][0] == b"before"
    assert container.labels() == labels
    assert recorder.saved == [b"before"]  # the host's copy is the restored container's


def test_a_session_that_ended_unwatched_is_saved_first_and_no_other(workspace: Path, tmp_path: Path) -> None:
    recorder = SaveRecorder()
    manager = sessions(workspace, recorder)
    other_workspace = tmp_path / "other"
    other_workspace.mkdir()
    other, _ctx = manager.launch(LaunchRequest(other_workspace))
    container, _ctx = manager.launch(LaunchRequest(workspace))
    snapshots.create(manager, container.name, "good")
    for ended in (container, other):
        ended.stop()  # a poweroff inside, no cci watching: still 'running' by label
    snapshots.restore(manager, container.name, "good")
    assert container.labels()["state"] == "saved" and len(recorder.saved) == 2  # the end's save, the restore's
    assert other.labels()["state"] == "running"  # another workspace's: left to the commands that list sessions


def test_restore_runs_the_end_s_save_hook_alone(workspace: Path) -> None:
    from tests.unit.test_lifecycle_hooks import Recorder

    recorder = Recorder()
    manager = sessions(workspace, recorder)
    container = saved(manager, workspace)
    snapshots.create(manager, container.name, "good")
    recorder.calls.clear()
    snapshots.restore(manager, container.name, "good")
    assert recorder.calls == ["cci_post_exit_save"]  # (docs/lifecycle.md, which hooks run when)


def test_restore_refuses_a_running_container(workspace: Path) -> None:
    manager = sessions(workspace)
    container, _ctx = manager.launch(LaunchRequest(workspace))
    snapshots.create(manager, container.name, "good")
    container.push_file(HOME_FILE, b"after")
    labels = container.labels()
    with pytest.raises(UsageError, match=rf"{container.name} is running: stop it first with cci shutdown "
                                         rf"{container.name}$"):
        snapshots.restore(manager, container.name, "good")
    assert container.files[HOME_FILE][0] == b"after" and container.labels() == labels


def test_restore_and_delete_of_a_missing_snapshot_are_one_line(workspace: Path) -> None:
    manager = sessions(workspace)
    container = saved(manager, workspace)
    labels = container.labels()
    for action in (snapshots.restore, snapshots.delete):
        with pytest.raises(NotFoundError, match=f"{container.name} has no snapshot 'nope'"):
            action(manager, container.name, "nope")
    assert container.labels() == labels


def test_a_reuse_during_a_restore_does_not_take_the_container(workspace: Path) -> None:
    manager = sessions(workspace)
    container = saved(manager, workspace)
    snapshots.create(manager, container.name, "good")
    restore = container.restore_snapshot
    seen: list[object] = []

    def racing(name: str) -> None:
        seen.append(manager.reuse(workspace))  # a 'cci shell' at that very moment
        restore(name)

    container.restore_snapshot = racing  # type: ignore[method-assign]
    snapshots.restore(manager, container.name, "good")
    assert seen == [None] and container.status() == "stopped" and container.labels()["state"] == "saved"


def test_a_failed_save_after_the_restore_says_so_and_gives_the_container_back(workspace: Path) -> None:
    class FailingSave:
        @hookimpl
        def cci_post_exit_save(self, ctx, container):  # type: ignore[no-untyped-def]
            raise CciError("disk full")

    manager = sessions(workspace)
    container = saved(manager, workspace)
    snapshots.create(manager, container.name, "good")
    labels = container.labels()
    manager.plugins.manager.register(FailingSave())  # type: ignore[attr-defined]
    with pytest.raises(CciError, match="was restored to snapshot good, but its saved session could not be updated "
                                       r"\(disk full\)"):
        snapshots.restore(manager, container.name, "good")
    assert container.labels() == labels


# --- delete ------------------------------------------------------------------------------------------------


def test_delete(workspace: Path) -> None:
    manager = sessions(workspace)
    container = saved(manager, workspace)
    snapshots.create(manager, container.name, "one")
    snapshots.create(manager, container.name, "two")
    snapshots.delete(manager, container.name, "one")
    assert [info.name for info in snapshots.snapshots(manager, container.name)] == ["two"]


# --- snapshot_on_start -------------------------------------------------------------------------------------


def restart(manager: SessionManager, workspace: Path) -> None:
    reused = manager.reuse(workspace)
    assert reused is not None
    assert manager.finish(reused[0])


def test_no_automatic_snapshot_by_default(workspace: Path) -> None:
    manager = sessions(workspace)
    container = saved(manager, workspace)
    restart(manager, workspace)
    assert not container.snapshot_files


def test_each_start_takes_one_and_only_the_newest_automatic_ones_are_kept(workspace: Path) -> None:
    manager = sessions(workspace, snapshot_on_start=True, snapshot_keep=2)
    container = saved(manager, workspace)
    snapshots.create(manager, container.name, "mine")
    taken = []
    for _start in range(3):
        restart(manager, workspace)
        taken.append([info.name for info in container.snapshots()][-1])
    assert all(snapshots.is_automatic(name) for name in taken) and len(set(taken)) == 3
    assert [info.name for info in container.snapshots()] == ["mine", *taken[1:]]
    # taken before the start: the container held for the restart, never 'saved'
    assert container.snapshot_files[taken[-1]][2]["state"] == "launching"


def test_keep_zero_keeps_every_automatic_snapshot(workspace: Path) -> None:
    manager = sessions(workspace, snapshot_on_start=True, snapshot_keep=0)
    container = saved(manager, workspace)
    for _start in range(3):
        restart(manager, workspace)
    assert len(container.snapshots()) == 3


def test_a_failed_automatic_snapshot_refuses_the_start(workspace: Path) -> None:
    manager = sessions(workspace, snapshot_on_start=True)
    container = saved(manager, workspace)

    def failing(name: str) -> object:
        raise CciError("the pool is full")

    container.create_snapshot = failing  # type: ignore[method-assign,assignment]
    with pytest.raises(CciError, match=rf"{container.name} was not started: its automatic snapshot failed \(the pool "
                                       r"is full\) \(set \[defaults\] snapshot_on_start = false"):
        manager.reuse(workspace)
    assert container.status() == "stopped" and container.labels()["state"] == "saved"


def test_a_failed_deletion_of_an_old_one_is_a_warning(workspace: Path) -> None:
    warnings: list[str] = []
    manager = sessions(workspace, snapshot_on_start=True, snapshot_keep=1)
    manager.warn = warnings.append
    container = saved(manager, workspace)
    restart(manager, workspace)

    def failing(name: str) -> None:
        raise CciError("busy")

    container.delete_snapshot = failing  # type: ignore[method-assign]
    restart(manager, workspace)
    assert len(container.snapshots()) == 2
    assert len(warnings) == 1 and warnings[0].startswith("could not delete the old automatic snapshot auto-")


# --- Incus: the configuration a restore keeps ----------------------------------------------------------------


def test_a_restore_keeps_the_configuration_but_the_disk_s_own_keys() -> None:
    before = {"user.cci.state": "ending", "user.cci.launcher": "boot:2", "volatile.last_state.power": "STOPPED",
              "volatile.last_state.idmap": "[]", "volatile.uuid.generation": "old", "limits.processes": "500"}
    restored = {"user.cci.state": "running", "user.cci.launcher": "boot:1", "volatile.last_state.power": "RUNNING",
                "volatile.eth0.host_name": "veth1", "volatile.last_state.idmap": "[shifted]",
                "volatile.uuid.generation": "new", "volatile.idmap.current": "[map]"}
    assert kept_config(before, restored) == {
        **before, "volatile.last_state.idmap": "[shifted]", "volatile.uuid.generation": "new",
        "volatile.idmap.current": "[map]"}  # (an idmap key Incus refuses to see removed)


def test_snapshots_sort_by_the_time_incus_took_them() -> None:
    times = ["2026-12-03T19:26:05.10000001Z", "2026-12-03T19:26:05Z", "2026-12-03T19:26:05.1Z",
             "2026-12-03T19:26:04.999999999Z", "2026-12-03T19:26:05.3Z"]
    assert sorted(times, key=taken_at) == ["2026-12-03T19:26:04.999999999Z", "2026-12-03T19:26:05Z",
                                           "2026-12-03T19:26:05.1Z", "2026-12-03T19:26:05.10000001Z",
                                           "2026-12-03T19:26:05.3Z"]
