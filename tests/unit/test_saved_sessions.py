"""Saved sessions: the store on the host, the tool-state plugin, and the session manager's save/resume paths."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path

import pytest

from cci_core import hookimpl
from cci_core.config import Override, load_config
from cci_core.context import LaunchContext
from cci_core.driver import UNREADABLE, TreeEntry
from cci_core.errors import CciError, NotFoundError, UsageError
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_record import State
from cci_core.session_store import SavedSession, SessionStore, validate_id
from cci_core.tool import CredentialFile, ToolAdapter
from cci_builtin_plugins.tools import state
from tests.fakes import FakeContainer, FakeDriver


class Tool(ToolAdapter):
    name = "demo"
    summary = "a demo tool"
    default_binary = "demo"
    state_dir = ".config/demo"
    credential_files = (CredentialFile("~/.demo-token", ".config/demo/token"),
                        CredentialFile("~/.demo.json", ".demo.json"))

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        return [self.binary, "--resume" if resume else "--new", session_id]

    def sandbox_settings(self):  # type: ignore[no-untyped-def]
        return {".demo.json": {"prompts": {"first_run": False}}}


class Plugin:
    @hookimpl
    def cci_register(self, register):  # type: ignore[no-untyped-def]
        register.add_driver(FakeDriver)
        register.add_tool(Tool)


def metadata(session_id: str, workspace: Path) -> SavedSession:
    return SavedSession(session_id, "demo", str(workspace.resolve()), "cci-0-1", 1, False, "", "", Path())


def context(workspace: Path, session_id: str = "s1", **overrides: object) -> LaunchContext:
    config = load_config(workspace, environ={}, overrides=[Override(key, value, "test")
                                                           for key, value in overrides.items()])
    return LaunchContext(config=config, workspace=workspace.resolve(), container_name="cci-0-1", slot=1,
                         session_id=session_id, persistent=False, image="cci", tool=Tool())


# --- the store ---------------------------------------------------------------------------------------------


def test_a_save_is_private_and_keeps_its_creation_time(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "cci")
    first = store.save(metadata("s1", tmp_path), lambda d: (d / "state.txt").write_text("one"))
    second = store.save(metadata("s1", tmp_path), lambda d: (d / "state.txt").write_text("two"))
    assert second.created == first.created and second.saved >= first.saved
    assert (second.path / "state.txt").read_text() == "two"
    assert json.loads((second.path / "metadata.json").read_text())["workspace"] == str(tmp_path.resolve())
    for directory in (store.root, store.tool_dir("demo"), second.path):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((second.path / "metadata.json").stat().st_mode) == 0o600
    assert sorted(path.name for path in store.tool_dir("demo").iterdir()) == [".save-s1.lock", "s1"]  # no staging or retired copies


def test_a_failed_save_leaves_the_previous_one(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(metadata("s1", tmp_path), lambda d: (d / "state.txt").write_text("good"))

    def broken(directory: Path) -> None:
        (directory / "state.txt").write_text("half")
        raise CciError("pull failed")

    with pytest.raises(CciError):
        store.save(metadata("s1", tmp_path), broken)
    assert (store.tool_dir("demo") / "s1" / "state.txt").read_text() == "good"
    assert sorted(path.name for path in store.tool_dir("demo").iterdir()) == [".save-s1.lock", "s1"]


def test_a_disk_error_is_one_clean_error_and_the_previous_save_stays(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(metadata("s1", tmp_path), lambda d: (d / "state.txt").write_text("good"))

    def disk_full(directory: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(CciError, match="could not save session s1 to .*: No space left on device"):
        store.save(metadata("s1", tmp_path), disk_full)
    assert (store.tool_dir("demo") / "s1" / "state.txt").read_text() == "good"


def test_saves_of_one_session_at_once_all_land(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = SessionStore(tmp_path)

    def save(index: int) -> None:
        store.save(metadata("s1", tmp_path), lambda d: (d / "state.txt").write_text(str(index)))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(save, range(40)))  # any failed swap raises here
    assert (store.tool_dir("demo") / "s1" / "state.txt").read_text() in {str(index) for index in range(40)}
    assert sorted(path.name for path in store.tool_dir("demo").iterdir()) == [".save-s1.lock", "s1"]


def test_one_process_at_a_time_resumes_a_session(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = SessionStore(tmp_path)
    holder = ("import sys; from pathlib import Path; from cci_core.session_store import SessionStore\n"
              "with SessionStore(Path(sys.argv[1])).resuming('demo', 's1'):\n    print('held', flush=True); "
              "sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        with pytest.raises(UsageError, match="session s1 is being resumed by another cci command"):
            with store.resuming("demo", "s1"):
                pass
        with store.resuming("demo", "s2"):  # another session: no wait
            pass
    finally:
        other.communicate("")
    with store.resuming("demo", "s1"):  # free again once that process let go
        pass


def test_sessions_are_workspace_scoped(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "cci")
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir(), other.mkdir()
    store.save(metadata("old", mine), lambda d: None)
    store.save(metadata("foreign", other), lambda d: None)
    store.save(metadata("new", mine), lambda d: None)
    assert store.latest("demo", mine).id == "new"
    assert store.find("demo", "old", mine).id == "old"
    with pytest.raises(UsageError, match="belongs to another workspace"):
        store.find("demo", "foreign", mine)
    with pytest.raises(NotFoundError, match="no saved demo session 'missing'"):
        store.find("demo", "missing", mine)
    with pytest.raises(NotFoundError, match="no saved demo session for"):
        store.latest("demo", tmp_path)
    assert [session.id for session in store.sessions()] == ["new", "foreign", "old"]


@pytest.mark.parametrize("bad", ["../x", "/etc", ".hidden", "a/b", "", "x" * 200])
def test_path_like_ids_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="is not a valid session id"):
        validate_id(bad)


# --- the tool-state plugin ---------------------------------------------------------------------------------


def test_credentials_are_injected_fresh_and_settings_merged(tmp_path: Path, isolated_env: Path) -> None:
    (isolated_env / ".demo-token").write_text("token-1")
    (isolated_env / ".demo.json").write_text('{"user": "me", "prompts": {"theme": "dark"}}')
    container = FakeContainer("cci-0-1")
    state.cci_inject_credentials(ctx=context(tmp_path), container=container)
    assert container.files["/home/code/.config/demo/token"] == (b"token-1", 0o600, 1000, 1000)
    settings, mode, uid, _gid = container.files["/home/code/.demo.json"]
    assert json.loads(settings) == {"user": "me", "prompts": {"theme": "dark", "first_run": False}}
    assert (mode, uid) == (0o600, 1000)
    assert set(container.directories) == {"/home/code/.config", "/home/code/.config/demo"}


def test_no_credentials_without_mount_claude_config(tmp_path: Path, isolated_env: Path) -> None:
    (isolated_env / ".demo-token").write_text("token-1")
    container = FakeContainer("cci-0-1")
    state.cci_inject_credentials(ctx=context(tmp_path, **{"defaults.mount_claude_config": False}),
                                 container=container)
    assert list(container.files) == ["/home/code/.demo.json"]  # the sandbox settings only
    assert json.loads(container.files["/home/code/.demo.json"][0]) == {"prompts": {"first_run": False}}


def test_saved_state_has_no_credentials_and_comes_back_on_resume(tmp_path: Path, isolated_env: Path) -> None:
    running = FakeContainer("cci-0-1")
    running.push_file("/home/code/.config/demo/history", b"turn 1")
    running.push_file("/home/code/.config/demo/token", b"secret-token")
    saved = state.save_state(context(tmp_path), running)
    assert saved is not None and saved.path == isolated_env / ".cci" / "sessions-demo" / "s1"
    assert (saved.path / "demo" / "history").read_bytes() == b"turn 1"
    assert not (saved.path / "demo" / "token").exists()
    assert b"secret-token" not in b"".join(path.read_bytes() for path in saved.path.rglob("*") if path.is_file())

    fresh = FakeContainer("cci-0-2")
    ctx = context(tmp_path)
    ctx.resume_from = "s1"
    state.cci_session_restore(ctx=ctx, container=fresh)
    assert fresh.files == {"/home/code/.config/demo/history": (b"turn 1", 0o600, 1000, 1000)}


class DeletedContainer(FakeContainer):
    """A container deleted (by another cci, or by hand) before its state could be copied."""

    def pull_tree(self, path: str, destination: Path) -> None:
        raise NotFoundError("Instance not found")

    def status(self) -> str:
        raise NotFoundError("Instance not found")


def test_a_container_gone_before_the_save_leaves_the_last_save_as_it_was(tmp_path: Path) -> None:
    running = FakeContainer("cci-0-1")
    running.push_file("/home/code/.config/demo/history", b"turn 1")
    saved = state.save_state(context(tmp_path), running)
    assert saved is not None
    with pytest.raises(NotFoundError):
        state.save_state(context(tmp_path), DeletedContainer("cci-0-1"))
    assert (saved.path / "demo" / "history").read_bytes() == b"turn 1"


class UnreadableEntries(FakeContainer):
    """A container whose file server cannot read some of the state directory (a path over PATH_MAX, say)."""

    gone = False

    @contextlib.contextmanager
    def read_tree(self, path, limits):  # type: ignore[no-untyped-def]
        long = "/".join(["d" * 200] * 25)
        yield iter([TreeEntry(".", "directory", 0o700),
                    TreeEntry("history", "file", 0o600, 6, data=io.BytesIO(b"turn 2")),
                    TreeEntry(long, UNREADABLE), TreeEntry("x/link", UNREADABLE)])

    def status(self) -> str:
        if self.gone:
            raise NotFoundError("Instance not found")
        return "stopped"


def test_what_the_container_cannot_read_is_left_out_with_a_warning_unless_the_container_went_away(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    container = UnreadableEntries("cci-0-1")
    saved = state.save_state(context(tmp_path), container)
    assert saved is not None and (saved.path / "demo" / "history").read_bytes() == b"turn 2"
    warning = capsys.readouterr().err
    assert "session s1: 2 entries that could not be read (too long a path, over 128 levels down, refused) " \
           "not saved, with what is below them: dddd" in warning and ", x/link" in warning
    assert len(warning) < 1000  # the names are cut short
    container.gone = True
    with pytest.raises(NotFoundError):
        state.save_state(context(tmp_path), container)
    assert (saved.path / "demo" / "history").read_bytes() == b"turn 2"


class DeepLinks(FakeContainer):
    """A state directory deeper than the host can name, every level with a link ``up -> ..``, and at the bottom
    a link whose target stays inside by its text but leads out through those links."""

    LEVELS = 22

    @contextlib.contextmanager
    def read_tree(self, path, limits):  # type: ignore[no-untyped-def]
        entries, directory = [TreeEntry(".", "directory", 0o700)], ""
        for _level in range(self.LEVELS):
            directory = f"{directory}/{'p' * 200}".lstrip("/")
            entries += [TreeEntry(directory, "directory", 0o700), TreeEntry(f"{directory}/up", "symlink", target="..")]
        entries.append(TreeEntry(f"{directory}/out", "symlink", target="up/" * self.LEVELS + "../" * self.LEVELS))
        yield iter(entries)


def test_a_saved_copy_holds_no_path_too_long_for_the_host_so_every_link_out_is_dropped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = state.save_state(context(tmp_path), DeepLinks("cci-0-1"))
    assert saved is not None
    found = [(len(os.fsencode(os.path.join(directory, name))), name)  # through descriptors: any depth
             for directory, subdirectories, files, _fd in os.fwalk(saved.path) for name in subdirectories + files]
    assert len(found) > 10 and all(length < 4096 for length, _name in found)  # the links were all checked by path
    assert "out" not in [name for _length, name in found]
    assert "not saved, with what is below them: pppp" in capsys.readouterr().err


class PlantedLinks(FakeContainer):
    """A container whose agent made links to host paths in the state directory (or made it one)."""

    def __init__(self, name: str, host: Path, *, root_link: bool = False) -> None:
        super().__init__(name)
        self.host, self.root_link = host, root_link

    def pull_tree(self, path: str, destination: Path) -> None:
        if self.root_link:
            destination.symlink_to(self.host)
            return
        destination.mkdir(parents=True)
        (destination / "history").write_bytes(b"turn 1")
        (destination / "inner").symlink_to("history")  # inside the copy: kept
        (destination / "token").symlink_to(self.host / "token")  # the credential's name, leading to the host
        (destination / "keys").symlink_to(self.host)
        (destination / "up").symlink_to("..")


def host_secrets(tmp_path: Path) -> Path:
    host = tmp_path / "host-home"
    host.mkdir()
    (host / "token").write_bytes(b"host credentials")
    (host / "id_ed25519").write_bytes(b"private key")
    return host


def test_links_out_of_a_saved_copy_are_dropped_and_never_followed(tmp_path: Path) -> None:
    host = host_secrets(tmp_path)
    saved = state.save_state(context(tmp_path), PlantedLinks("cci-0-1", host))
    assert saved is not None
    assert sorted(path.name for path in (saved.path / "demo").iterdir()) == ["history", "inner"]
    assert (host / "token").read_bytes() == b"host credentials"  # removing 'token' did not follow the link


def test_a_state_directory_made_a_link_saves_nothing_and_restores_nothing(tmp_path: Path) -> None:
    host = host_secrets(tmp_path)
    saved = state.save_state(context(tmp_path), PlantedLinks("cci-0-1", host, root_link=True))
    assert saved is not None and [path.name for path in saved.path.iterdir()] == ["metadata.json"]
    assert sorted(path.name for path in host.iterdir()) == ["id_ed25519", "token"]
    (saved.path / "demo").symlink_to(host)  # a link in a copy saved by an older cci
    fresh = FakeContainer("cci-0-2")
    ctx = context(tmp_path)
    ctx.resume_from = "s1"
    state.cci_session_restore(ctx=ctx, container=fresh)
    assert fresh.files == {}  # the host directory it names is not pushed into the container


def test_a_copy_of_the_host_credentials_under_another_name_is_not_saved(tmp_path: Path, isolated_env: Path) -> None:
    (isolated_env / ".demo-token").write_bytes(b"host-secret-token")
    running = FakeContainer("cci-0-1")
    running.push_file("/home/code/.config/demo/history", b"turn 1")
    running.push_file("/home/code/.config/demo/cache/notes.bak", b"host-secret-token")  # cp token notes.bak
    saved = state.save_state(context(tmp_path), running)
    assert saved is not None
    assert sorted(str(p.relative_to(saved.path)) for p in saved.path.rglob("*") if p.is_file()) == [
        "demo/history", "metadata.json"]


def test_a_file_holding_an_injected_secret_value_is_not_saved(tmp_path: Path, isolated_env: Path) -> None:
    # the demo tool declares no secret keys: every string of 16+ characters in its credential files counts
    (isolated_env / ".demo.json").write_text('{"account": {"session": "a-long-session-token-123"}, "theme": "dark"}')
    running = FakeContainer("cci-0-1")
    running.push_file("/home/code/.config/demo/history", b"turn 1: dark theme")
    running.push_file("/home/code/.config/demo/log.txt", b"sent a-long-session-token-123 to the server")
    saved = state.save_state(context(tmp_path), running)
    assert saved is not None
    assert sorted(str(p.relative_to(saved.path)) for p in saved.path.rglob("*") if p.is_file()) == [
        "demo/history", "metadata.json"]


class HangingContainer(FakeContainer):
    """A container whose state directory cannot be read within the save's bounds."""

    def read_tree(self, path, limits):  # type: ignore[no-untyped-def]
        from cci_core.driver import TreeReadError

        raise TreeReadError("no data from the container for 60 s")


def test_a_save_that_cannot_finish_in_time_is_abandoned_and_the_last_save_stays(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = FakeContainer("cci-0-1")
    running.push_file("/home/code/.config/demo/history", b"turn 1")
    saved = state.save_state(context(tmp_path), running)
    assert saved is not None
    assert state.save_state(context(tmp_path), HangingContainer("cci-0-1")) is None
    assert "session s1 was not saved this time (no data from the container for 60 s); its last save is kept" \
        in capsys.readouterr().err
    assert (saved.path / "demo" / "history").read_bytes() == b"turn 1"
    assert sorted(path.name for path in saved.path.parent.iterdir()) == [".save-s1.lock", "s1"]


def test_a_tool_that_wrote_no_state_still_records_the_session(tmp_path: Path) -> None:
    saved = state.save_state(context(tmp_path), FakeContainer("cci-0-1"))
    assert saved is not None and [path.name for path in saved.path.iterdir()] == ["metadata.json"]


# --- the session manager -----------------------------------------------------------------------------------


def manager(tmp_path: Path, *extra: object) -> SessionManager:
    config = load_config(tmp_path, environ={}, overrides=[Override("defaults.driver", "fake", "test"),
                                                          Override("tool.name", "demo", "test")])
    plugins = load_plugins(entry_points=False, extra=[("demo", Plugin()), *((f"x{i}", p) for i, p in enumerate(extra))])
    return SessionManager(config, FakeDriver(config), plugins)


def test_resume_restores_before_credentials_and_keeps_the_id(tmp_path: Path) -> None:
    calls: list[str] = []

    class Order:
        @hookimpl
        def cci_session_restore(self, ctx, container):  # type: ignore[no-untyped-def]
            calls.append(f"restore {ctx.resume_from}")

        @hookimpl
        def cci_inject_credentials(self, ctx, container):  # type: ignore[no-untyped-def]
            calls.append("credentials")

    SessionStore().save(metadata("s-old", tmp_path), lambda d: None)
    sessions = manager(tmp_path, Order())
    container, ctx = sessions.launch(LaunchRequest(tmp_path, resume_from="s-old"))
    assert calls == ["restore s-old", "credentials"]
    assert container.labels()["session"] == ctx.session_id == "s-old"
    calls.clear()
    sessions.launch(LaunchRequest(tmp_path))
    assert calls == ["credentials"]


def test_a_failed_save_deletes_nothing_and_is_retried(tmp_path: Path) -> None:
    class FailingSave:
        fail = True

        @hookimpl
        def cci_post_exit_save(self, ctx, container):  # type: ignore[no-untyped-def]
            if self.fail:
                raise CciError("disk full")

    saver = FailingSave()
    sessions = manager(tmp_path, saver)
    container, _ctx = sessions.launch(LaunchRequest(tmp_path))
    container.set_labels({"launcher": "a-cci-run:1"})
    launched_by = container.labels()["launcher"]
    container.stop()  # powered off inside, nobody watching
    warnings: list[str] = []
    sessions.warn = warnings.append
    assert sessions.reconcile() == []
    assert container.name in sessions.driver.containers and container.labels()["state"] == State.RUNNING
    assert "could not finish the ended session" in warnings[0] and "disk full" in warnings[0]
    assert container.labels()["launcher"] == launched_by  # handed back to its own cci process, not the finisher
    saver.fail = False
    assert sessions.reconcile() == [container.name]
    assert container.name not in sessions.driver.containers


def test_a_session_past_its_deadline_is_stopped_at_once_by_the_command_that_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a graceful stop waits up to 60 s, which root inside makes it take (systemctl mask halt.target): the agent had
    # that much more time, and the user's 'cci list' hung as long; the attached cci forces it at the deadline too
    sessions = manager(tmp_path)
    container, _ctx = sessions.launch(LaunchRequest(tmp_path))
    container.set_labels({"deadline": "1000"})
    stops: list[bool] = []

    def stop(self: FakeContainer, *, force: bool = False, timeout: int = 60) -> None:
        stops.append(force)
        self.state = "stopped"

    monkeypatch.setattr(FakeContainer, "stop", stop)
    assert sessions.reconcile() == [container.name]
    assert stops == [True]


class Ends:
    """Records each cci_session_end: the container, and whether it was deleted."""

    def __init__(self) -> None:
        self.ends: list[tuple[str, bool]] = []

    @hookimpl
    def cci_session_end(self, ctx, deleted, report):  # type: ignore[no-untyped-def]
        self.ends.append((ctx.container_name, deleted))


class DiskFull:
    @hookimpl
    def cci_post_exit_save(self, ctx, container):  # type: ignore[no-untyped-def]
        raise CciError("disk full")


def test_a_session_whose_save_fails_has_ended_and_cci_kill_ends_it_all_the_same(tmp_path: Path) -> None:
    ends = Ends()
    sessions = manager(tmp_path, DiskFull(), ends)
    container, _ctx = sessions.launch(LaunchRequest(tmp_path))
    container.stop()  # powered off inside: the agent is done, whatever becomes of the save
    warnings: list[str] = []
    sessions.warn = warnings.append
    assert sessions.reconcile() == []
    assert container.labels()["state"] == State.RUNNING and container.name in sessions.driver.containers  # retried
    assert ends.ends == [(container.name, False)]  # the workspace guard's report and setuid clearing ran
    assert sessions.finish(container, force=True, delete=True)  # cci kill
    assert container.name not in sessions.driver.containers
    assert ends.ends == [(container.name, False), (container.name, True)]
    assert "could not be saved (disk full); it is ended all the same, its last save is kept" in warnings[-1]


def test_cci_kill_ends_a_session_whose_tool_plugin_is_gone(tmp_path: Path) -> None:
    ends = Ends()
    sessions = manager(tmp_path, ends)
    container, _ctx = sessions.launch(LaunchRequest(tmp_path))
    container.set_labels({"tool": "uninstalled"})
    with pytest.raises(CciError):
        sessions.finish(container)
    assert container.labels()["state"] == State.RUNNING and ends.ends == [(container.name, False)]
    assert sessions.finish(container, force=True, delete=True)
    assert container.name not in sessions.driver.containers and ends.ends[-1] == (container.name, True)


def test_a_launch_taken_over_by_another_cci_is_left_to_it(tmp_path: Path) -> None:
    from cci_core.session_record import launcher_id

    class KillMeanwhile:
        """Another cci process ('cci kill') claims the container while this one still launches it."""

        @hookimpl
        def cci_inject_credentials(self, ctx, container):  # type: ignore[no-untyped-def]
            assert container.compare_and_set_labels({"state": "launching"}, {"state": State.ENDING,
                                                                             "launcher": "elsewhere:1"})

    sessions = manager(tmp_path, KillMeanwhile())
    with pytest.raises(CciError, match="was ended by another cci command while it started"):
        sessions.launch(LaunchRequest(tmp_path))
    [container] = sessions.driver.containers.values()  # not deleted under the other process's feet
    assert container.labels()["state"] == State.ENDING and container.labels()["launcher"] == "elsewhere:1"
    assert launcher_id() != "elsewhere:1"


class Saver:
    """Records the containers whose session was saved at its end."""

    def __init__(self) -> None:
        self.saves: list[str] = []

    @hookimpl
    def cci_post_exit_save(self, ctx, container):  # type: ignore[no-untyped-def]
        self.saves.append(container.name)


def test_ending_a_launch_saves_nothing_over_the_saved_session(tmp_path: Path) -> None:
    saver = Saver()
    sessions = manager(tmp_path, saver)
    container, _ctx = sessions.launch(LaunchRequest(tmp_path))
    container.set_labels({"state": "launching"})  # e.g. 'cci kill' while a resume still restores its state
    assert sessions.finish(container) and saver.saves == []
    running, _ctx = sessions.launch(LaunchRequest(tmp_path))
    assert sessions.finish(running) and saver.saves == [running.name]


@pytest.mark.parametrize("where", ["home", "root", "cci files", "config"])
def test_a_workspace_holding_your_home_or_ccis_files_is_refused(where: str, isolated_env: Path) -> None:
    workspace = {"home": isolated_env, "root": Path("/"), "cci files": isolated_env / ".cci" / "sessions-demo",
                 "config": isolated_env / ".config" / "cci"}[where]
    workspace.mkdir(parents=True, exist_ok=True)
    sessions = manager(workspace)
    with pytest.raises(UsageError, match="the container would get it read-write"):
        sessions.launch(LaunchRequest(workspace))
    assert sessions.driver.containers == {}


@pytest.mark.parametrize("where", [".ssh", ".gnupg/private-keys-v1.d", ".aws", ".kube", ".docker", ".config",
                                   ".local/bin", ".claude", ".codex", "bin", ".cargo/bin", ".gradle/init.d",
                                   ".vscode/extensions", ".ipython", "link to .ssh"])
def test_a_workspace_in_your_credentials_or_trusted_directories_is_refused(where: str, isolated_env: Path) -> None:
    """The agent could read keys there, or plant ones (or programs) your machine trusts: refused as home is."""
    (isolated_env / ".ssh").mkdir()
    (isolated_env / "projects").mkdir()
    workspace = isolated_env / "projects" / "keys" if where == "link to .ssh" else isolated_env / where
    if where == "link to .ssh":
        workspace.symlink_to(isolated_env / ".ssh")
    workspace.mkdir(parents=True, exist_ok=True)
    sessions = manager(workspace)
    with pytest.raises(UsageError, match=r"workspace .* (is in|holds) (~/\.?[a-z]+|your cci config) .*the container would get it"):
        sessions.launch(LaunchRequest(workspace))
    with pytest.raises(UsageError, match=r"storage directory .* (is in|holds) (~/\.?[a-z]+|your cci config)"):
        manager(isolated_env / "projects").launch(LaunchRequest(isolated_env / "projects", storage=(workspace,)))
    assert sessions.driver.containers == {}


def test_a_credentials_directory_that_is_a_link_guards_where_it_leads(isolated_env: Path, tmp_path: Path) -> None:
    """~/.ssh kept elsewhere through a link: a workspace in (or holding) that place is refused all the same."""
    keys = tmp_path / "elsewhere" / "keys"
    (keys / "sub").mkdir(parents=True)
    (isolated_env / ".ssh").symlink_to(keys)
    for workspace in (keys / "sub", keys.parent):
        with pytest.raises(UsageError, match=r"workspace .* (is in|holds) ~/\.ssh .*the container would get it"):
            manager(workspace).launch(LaunchRequest(workspace))


def test_the_credential_directory_of_any_installed_tool_is_refused(isolated_env: Path) -> None:
    """Not only the built-in tools': a third-party tool's directory under the home holding its credentials."""
    class KeyTool(Tool):
        name = "keytool"
        credential_files = (CredentialFile("~/.keytool/auth/key.json", ".keytool/key.json"),)

    class KeyPlugin:
        @hookimpl
        def cci_register(self, register):  # type: ignore[no-untyped-def]
            register.add_tool(KeyTool)

    workspace = isolated_env / ".keytool" / "auth"
    workspace.mkdir(parents=True)
    with pytest.raises(UsageError, match=r"workspace .* is in ~/\.keytool .*the container would get it"):
        manager(workspace, KeyPlugin()).launch(LaunchRequest(workspace))
    elsewhere = isolated_env / "projects" / "app"
    elsewhere.mkdir(parents=True)
    container, _ctx = manager(elsewhere, KeyPlugin()).launch(LaunchRequest(elsewhere))
    assert container.name


def test_a_project_in_your_home_is_fine(isolated_env: Path) -> None:
    workspace = isolated_env / "projects" / "app"
    workspace.mkdir(parents=True)
    container, _ctx = manager(workspace).launch(LaunchRequest(workspace))
    assert container.labels()["workspace"] == str(workspace.resolve())


def test_a_sessions_context_carries_this_workspaces_environment_only_to_its_own_containers(tmp_path: Path) -> None:
    ours, other = tmp_path / "ours", tmp_path / "other"
    ours.mkdir()
    other.mkdir()
    config = load_config(ours, environ={}, overrides=[Override("defaults.driver", "fake", "test"),
                                                      Override("tool.name", "demo", "test"),
                                                      Override("defaults.environment.API_TOKEN", "secret", "test")])
    sessions = SessionManager(config, FakeDriver(config), load_plugins(entry_points=False, extra=[("demo", Plugin())]))
    own = sessions.context("cci-a-1", {"workspace": str(ours.resolve()), "session": "s1"})
    foreign = sessions.context("cci-b-1", {"workspace": str(other.resolve()), "session": "s2"})
    assert own.environment == {"API_TOKEN": "secret"}
    assert foreign.environment == {} and "API_TOKEN" not in sessions.user_environment(foreign)


def test_ctrl_c_while_the_container_is_created_leaves_nothing(tmp_path: Path) -> None:
    sessions = manager(tmp_path)
    real_create = sessions.driver.create

    def interrupted(spec):  # type: ignore[no-untyped-def]
        real_create(spec)  # Incus made it, but the answer never arrived
        raise KeyboardInterrupt

    sessions.driver.create = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        sessions.launch(LaunchRequest(tmp_path))
    assert sessions.driver.containers == {}


def test_clean_deletes_a_launch_whose_undoing_was_cut_short_and_saves_nothing(tmp_path: Path) -> None:
    saver = Saver()
    sessions = manager(tmp_path, saver)
    container, _ctx = sessions.launch(LaunchRequest(tmp_path, resume_from=None))
    # the launcher reclaimed it to delete it, then died (a second Ctrl+C)
    container.set_labels({"state": "ending", "launcher": "not-this-boot:1", "previous": "launching"})
    sessions.recover(container)
    assert saver.saves == [] and container.name not in sessions.driver.containers


def test_a_storage_directory_holding_your_home_is_refused(tmp_path: Path, isolated_env: Path) -> None:
    workspace = isolated_env / "project"
    workspace.mkdir()
    sessions = manager(workspace)
    with pytest.raises(UsageError, match="storage directory .* holds your home directory"):
        sessions.launch(LaunchRequest(workspace, storage=(isolated_env,)))
    assert sessions.driver.containers == {}
