"""Which lifecycle hooks the session object runs, in which order, on launch, reuse, attach and end.

The session manager is driven with the fake driver and a plugin that records every
lifecycle hook it is called for; what the hooks contribute must reach the container.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_core import hookimpl
from cci_core.context import Mount, SessionEvent
from cci_core.errors import CciError, UsageError
from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_attach import Left
from tests.fakes import FakeContainer
from tests.unit.test_saved_sessions import manager

LAUNCH_HOOKS = ["cci_pre_launch", "cci_environment", "cci_instance_config", "cci_mounts", "cci_pre_start restart=False",
                "cci_inject_credentials", "cci_sandbox_brief", "cci_post_launch"]
REUSE_HOOKS = [hook.replace("restart=False", "restart=True") for hook in LAUNCH_HOOKS]


class Recorder:
    """Implements every lifecycle hook, records the calls, and contributes to each launch."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def cci_pre_launch(self, ctx):  # type: ignore[no-untyped-def]
        self.calls.append("cci_pre_launch")

    @hookimpl
    def cci_environment(self, ctx):  # type: ignore[no-untyped-def]
        self.calls.append("cci_environment")
        return {"FROM_RECORDER": "1", "SETTING": str(ctx.plugin_settings("recorder").get("value"))}

    @hookimpl
    def cci_instance_config(self, ctx):  # type: ignore[no-untyped-def]
        self.calls.append("cci_instance_config")
        return {"security.nesting": "true"}

    @hookimpl
    def cci_mounts(self, ctx):  # type: ignore[no-untyped-def]
        self.calls.append("cci_mounts")
        return [Mount("recorded", ctx.workspace, "/recorded")]

    @hookimpl
    def cci_pre_start(self, ctx, container, restart):  # type: ignore[no-untyped-def]
        self.calls.append(f"cci_pre_start restart={restart}")

    @hookimpl
    def cci_session_restore(self, ctx, container):  # type: ignore[no-untyped-def]
        self.calls.append("cci_session_restore")

    @hookimpl
    def cci_inject_credentials(self, ctx, container):  # type: ignore[no-untyped-def]
        self.calls.append("cci_inject_credentials")
        container.push_file("/home/code/.token", b"secret", mode=0o600, uid=1000, gid=1000)

    @hookimpl
    def cci_sandbox_brief(self, ctx, container):  # type: ignore[no-untyped-def]
        self.calls.append("cci_sandbox_brief")
        return [f"recorded for {ctx.network_policy}"]

    @hookimpl
    def cci_post_launch(self, ctx, container):  # type: ignore[no-untyped-def]
        self.calls.append("cci_post_launch")

    @hookimpl
    def cci_session_save(self, ctx, container, event):  # type: ignore[no-untyped-def]
        self.calls.append(f"cci_session_save {event.value}")

    @hookimpl
    def cci_post_exit_save(self, ctx, container):  # type: ignore[no-untyped-def]
        self.calls.append("cci_post_exit_save")

    @hookimpl
    def cci_session_end(self, ctx, deleted, report):  # type: ignore[no-untyped-def]
        self.calls.append(f"cci_session_end deleted={deleted}")


@pytest.fixture(autouse=True)
def brief_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo tool reads a brief (the hook runs for tools that do)."""
    from tests.unit.test_saved_sessions import Tool

    monkeypatch.setattr(Tool, "brief_path", ".config/demo/BRIEF.md")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / ".cci.toml").write_text('[plugins.recorder]\nvalue = "42"\n')
    return workspace


def recorded(workspace: Path) -> tuple[SessionManager, Recorder]:
    recorder = Recorder()
    return manager(workspace, recorder), recorder


def saved_session(workspace: Path) -> tuple[SessionManager, Recorder, FakeContainer]:
    """A persistent session launched and ended: stopped, saved; the recorder's calls cleared."""
    sessions, recorder = recorded(workspace)
    container, _ctx = sessions.launch(LaunchRequest(workspace, persistent=True))
    assert sessions.finish(container)
    assert container.labels()["state"] == "saved"
    recorder.calls.clear()
    return sessions, recorder, container


def test_a_launch_runs_the_launch_hooks_in_order_and_applies_what_they_contribute(workspace: Path) -> None:
    sessions, recorder = recorded(workspace)
    container, ctx = sessions.launch(LaunchRequest(workspace))
    assert recorder.calls == LAUNCH_HOOKS
    assert container.config["security.nesting"] == "true"  # type: ignore[attr-defined]
    assert Mount("recorded", workspace.resolve(), "/recorded") in container.host_mounts()
    assert ctx.environment["FROM_RECORDER"] == "1" and ctx.environment["SETTING"] == "42"
    assert container.files["/home/code/.token"] == (b"secret", 0o600, 1000, 1000)  # type: ignore[attr-defined]
    assert b"\n\nrecorded for restricted\n\n" in container.files["/home/code/.config/demo/BRIEF.md"][0]  # type: ignore[attr-defined]


def test_a_reuse_runs_the_launch_hooks_with_restart(workspace: Path) -> None:
    sessions, recorder, container = saved_session(workspace)
    reused = sessions.reuse(workspace)
    assert reused is not None and reused[0] is container
    assert recorder.calls == REUSE_HOOKS


def test_a_reuse_applies_storage_and_the_plugins_environment(workspace: Path, tmp_path: Path) -> None:
    sessions, _recorder, container = saved_session(workspace)
    data = tmp_path / "data"
    data.mkdir()
    reused = sessions.reuse(workspace, storage=(data,))
    assert reused is not None
    _container, ctx = reused
    assert Mount("storage0", data.resolve(), "/storage/data") in container.host_mounts()
    assert [mount.device for mount in container.host_mounts()].count("workspace") == 1  # replaced, not added
    assert ctx.storage == (data.resolve(),)
    assert sessions.user_environment(ctx)["FROM_RECORDER"] == "1"


def test_a_reuse_replaces_the_storage_of_the_earlier_start_by_device(workspace: Path, tmp_path: Path) -> None:
    sessions, _recorder = recorded(workspace)
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    for directory in (first, second, third):
        directory.mkdir()
    container, _ctx = sessions.launch(LaunchRequest(workspace, persistent=True, storage=(first, second)))
    assert sessions.finish(container)
    assert sessions.reuse(workspace, storage=(third,)) is not None
    storage = sorted(mount for mount in container.host_mounts() if mount.device.startswith("storage"))
    assert storage == [Mount("storage0", third.resolve(), "/storage/third"),
                       Mount("storage1", second.resolve(), "/storage/second")]  # not named again: kept


@pytest.mark.parametrize("new", ["outer/second/inner", "outer/second", "outer"])
def test_a_reuse_refuses_storage_that_overlaps_a_kept_storage_directory(workspace: Path, tmp_path: Path,
                                                                       new: str) -> None:
    """What a launch refuses (one storage directory in, around or the same as another) a reuse must not make of
    the storage it keeps: the container could swap the inner one for a link, the next start mount what it names."""
    sessions, _recorder = recorded(workspace)
    first, second = tmp_path / "outer" / "first", tmp_path / "outer" / "second"
    (second / "inner").mkdir(parents=True)
    first.mkdir()
    container, _ctx = sessions.launch(LaunchRequest(workspace, persistent=True, storage=(first, second)))
    assert sessions.finish(container)
    before = sorted(container.host_mounts())
    with pytest.raises(UsageError, match="storage directory .* (is in|holds) another storage directory"):
        sessions.reuse(workspace, storage=(tmp_path / new,))  # replaces storage0 (first), keeps storage1 (second)
    assert sorted(container.host_mounts()) == before  # nothing configured
    assert (container.labels()["state"], container.status()) == ("saved", "stopped")  # put back, usable
    assert sessions.reuse(workspace) is not None


def test_attach_runs_the_environment_hook_and_saves_at_detach(workspace: Path) -> None:
    sessions, recorder = recorded(workspace)
    launched, _ctx = sessions.launch(LaunchRequest(workspace))
    recorder.calls.clear()
    container, ctx = sessions.running(launched.name)
    assert sessions.tmux(container, ctx).environment["FROM_RECORDER"] == "1"  # reaches the tmux processes
    outcome = sessions.attach(container, ctx)
    assert outcome.left is Left.DETACHED
    assert recorder.calls == ["cci_environment", f"cci_session_save {SessionEvent.DETACH.value}"]


class PoweredOff(FakeContainer):
    """The session is powered off inside while the user is attached: the attach is cut off, the container stops."""

    def attach(self, argv, **kwargs):  # type: ignore[no-untyped-def]
        self.state = "stopped"
        return 1


def test_an_attach_that_ends_in_a_poweroff_ends_the_session(workspace: Path) -> None:
    sessions, recorder = recorded(workspace)
    launched, _ctx = sessions.launch(LaunchRequest(workspace))
    container = PoweredOff(launched.name, launched.labels(), sessions.driver)  # type: ignore[arg-type]
    container.state = "running"
    sessions.driver.containers[launched.name] = container  # type: ignore[attr-defined]
    recorder.calls.clear()
    outcome = sessions.attach(*sessions.running(launched.name))
    assert outcome.left is Left.ENDED and outcome.note == "session ended: saved, container deleted"
    assert recorder.calls == ["cci_environment", "cci_post_exit_save", "cci_session_end deleted=True"]
    assert not sessions.driver.exists(launched.name)


def test_an_end_from_the_host_saves_then_ends(workspace: Path) -> None:
    sessions, recorder = recorded(workspace)
    container, _ctx = sessions.launch(LaunchRequest(workspace, persistent=True))
    recorder.calls.clear()
    assert sessions.end(container.name)
    assert recorder.calls == ["cci_post_exit_save", "cci_session_end deleted=False"]
    recorder.calls.clear()
    assert sessions.end(container.name, force=True, delete=True)  # cci kill of a saved session: saved already
    assert recorder.calls == ["cci_session_end deleted=True"]


class Refuses:
    """Refuses a reuse at one hook, the first time only (after the container was configured again, for
    ``cci_pre_start``)."""

    def __init__(self, hook: str) -> None:
        self.hook, self.refused = hook, False

    def _maybe(self, hook: str) -> None:
        if hook == self.hook and not self.refused:
            self.refused = True
            raise CciError(f"{hook} refuses")

    @hookimpl
    def cci_pre_launch(self, ctx):  # type: ignore[no-untyped-def]
        self._maybe("cci_pre_launch")

    @hookimpl
    def cci_pre_start(self, ctx, container, restart):  # type: ignore[no-untyped-def]
        if restart:
            self._maybe("cci_pre_start")


@pytest.mark.parametrize("hook", ["cci_pre_launch", "cci_pre_start"])
def test_a_reuse_a_hook_refuses_is_put_back_saved_and_the_next_reuse_works(workspace: Path, tmp_path: Path,
                                                                          hook: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    refuses = Refuses("")
    sessions = manager(workspace, Recorder(), refuses)
    container, _ctx = sessions.launch(LaunchRequest(workspace, persistent=True))
    assert sessions.finish(container)
    refuses.hook = hook
    with pytest.raises(CciError, match=f"{hook} refuses"):
        sessions.reuse(workspace, storage=(data,))
    assert (container.labels()["state"], container.status()) == ("saved", "stopped")
    reused = sessions.reuse(workspace, storage=(data,))
    assert reused is not None and reused[0] is container and container.status() == "running"
    devices = [mount.device for mount in container.host_mounts()]
    assert sorted(devices) == sorted(set(devices)) and "storage0" in devices  # configured once more, no duplicates
