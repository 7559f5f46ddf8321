"""Sessions on a driver that cannot mount this host's paths (a remote Incus), with the fake driver: the workspace is
not mounted but copied in once started, marked so on the container, copied back at a save and at the end, and
--storage is refused before anything is made. Against the real Incus: tests/integration/test_remote.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_core.config import Override, load_config
from cci_core.context import SessionEvent
from cci_core.driver import ExecResult
from cci_core.errors import UsageError
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from tests.fakes import FakeContainer, FakeDriver
from tests.unit.test_network_policies import FakeDriverPlugin


class ElsewhereDriver(FakeDriver):
    """A fake driver whose server is not this host."""

    def mounts_host_paths(self) -> bool:
        return False


def manager(tmp_path: Path, said: list[str], *overrides: tuple[str, object]) -> SessionManager:
    config = load_config(tmp_path / "project", environ={}, overrides=[
        Override("defaults.driver", "fake", "test"), *(Override(key, value, "test") for key, value in overrides)])
    plugins = load_plugins(entry_points=False, extra=[("fake", FakeDriverPlugin())])
    sessions = SessionManager(config, ElsewhereDriver(config), plugins, warn=said.append)
    sessions._report = said.append  # type: ignore[method-assign]
    return sessions


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("a = 1\n")
    (root / "notes.txt").write_text("host\n")
    return root


def test_a_session_elsewhere_gets_a_copy_that_comes_back_at_a_save_and_at_the_end(project: Path,
                                                                                  tmp_path: Path) -> None:
    said: list[str] = []
    sessions = manager(tmp_path, said)
    container, ctx = sessions.launch(LaunchRequest(project, kind="run"))
    assert isinstance(container, FakeContainer)
    assert "workspace" not in {mount.device for mount in container.host_mounts()}  # no mount: a copy
    assert container.labels()["synced"] == "True" and ctx.synced
    assert container.files["/workspace/src/a.py"][0] == b"a = 1\n" and container.files["/workspace/src/a.py"][2] == 1000
    container.files["/workspace/made.txt"] = (b"inside\n", 0o644, 1000, 1000)
    sessions.save(ctx, container, SessionEvent.REQUESTED)
    assert (project / "made.txt").read_text() == "inside\n"
    container.files["/workspace/src/a.py"] = (b"a = 2\n", 0o644, 1000, 1000)
    (project / "notes.txt").write_text("changed on the host\n")
    container.files["/workspace/notes.txt"] = (b"changed inside\n", 0o644, 1000, 1000)
    assert sessions.finish(container)
    assert (project / "src" / "a.py").read_text() == "a = 2\n"
    assert (project / "notes.txt").read_text() == "changed on the host\n"
    [beside] = project.glob("notes.txt.cci-container-*")
    assert beside.read_text() == "changed inside\n"
    assert any("notes.txt changed on both sides" in line for line in said)


def test_storage_is_refused_elsewhere_before_anything_is_made(project: Path, tmp_path: Path) -> None:
    sessions = manager(tmp_path, [])
    storage = tmp_path / "storage"
    storage.mkdir()
    with pytest.raises(UsageError, match="--storage mounts .* from this host"):
        sessions.launch(LaunchRequest(project, kind="run", storage=(storage,)))
    assert sessions.driver.containers == {}  # type: ignore[attr-defined]


def test_a_copy_back_that_fails_keeps_the_session_but_a_kill_ends_it_with_a_warning(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cci_core.driver import TreeReadError
    from cci_core.session_record import SessionRecord, State

    said: list[str] = []
    sessions = manager(tmp_path, said)
    container, _ctx = sessions.launch(LaunchRequest(project, kind="run"))
    assert isinstance(container, FakeContainer)

    def too_much(self: FakeContainer, path: str, destination: Path) -> None:
        raise TreeReadError("reading /workspace took in over [sync] max_size")

    monkeypatch.setattr(FakeContainer, "pull_tree", too_much)
    with pytest.raises(TreeReadError):
        sessions.finish(container)
    assert container.status() == "running" and SessionRecord.from_labels(container.labels()).state is State.RUNNING
    assert sessions.finish(container, delete=True)
    assert container.name not in sessions.driver.containers  # type: ignore[attr-defined]
    assert any("could not be brought back" in line and "ended all the same" in line for line in said)


def test_a_workspace_over_max_size_is_refused_at_the_launch_and_nothing_is_left(project: Path, tmp_path: Path) -> None:
    from cci_core.workspace_sync import WorkspaceTooLarge

    (project / "big.bin").write_bytes(b"x" * (2 << 20))
    sessions = manager(tmp_path, [], ("sync.max_size", "1MiB"))
    with pytest.raises(WorkspaceTooLarge, match=r"over \[sync\] max_size \(1 MiB\)") as caught:
        sessions.launch(LaunchRequest(project, kind="run"))
    assert "[sync] exclude" in (caught.value.hint or "")
    assert sessions.driver.containers == {}  # type: ignore[attr-defined]


def test_a_synced_run_returns_once_its_copy_is_back_and_its_detached_end_does_not_copy_again(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cci_core.session_record import launcher_id

    sessions = manager(tmp_path, [])
    released: list[str] = []

    class Helper:
        launcher = f"{launcher_id().rpartition(':')[0]}:4999998"

        def __call__(self, name: str, delete: bool | None) -> Helper:
            return self

        def release(self) -> None:
            released.append("released")

    sessions.detached_end = Helper()  # type: ignore[assignment]

    def run(container: FakeContainer, argv: list[str], **_: object) -> ExecResult:
        if argv[0] == "sh":  # the run's command writes into the container's copy
            container.files["/workspace/out.txt"] = (b"done\n", 0o644, 1000, 1000)
        return ExecResult(0, "", "")

    monkeypatch.setattr(FakeContainer, "exec", run)
    assert sessions.run(LaunchRequest(project), ["sh", "-c", "echo done > out.txt"]) == 0
    assert (project / "out.txt").read_text() == "done\n" and released == ["released"]
    [container] = sessions.driver.containers.values()  # type: ignore[attr-defined]
    assert container.status() == "running"  # the stop is the detached end's: nothing in it reaches the host
    assert container.labels()["synced_back"] == "1"

    def no_second_copy(self: FakeContainer, path: str, destination: Path) -> None:
        raise AssertionError("copied back again")

    monkeypatch.setattr(FakeContainer, "pull_tree", no_second_copy)
    monkeypatch.setattr("cci_core.session.launcher_id", lambda: Helper.launcher)
    assert sessions.carry_on_end(container.name)
    assert container.name not in sessions.driver.containers  # type: ignore[attr-defined]
