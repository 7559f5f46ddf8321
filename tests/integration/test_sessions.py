"""Sessions on the real Incus: cci run, slots, ownership, isolation, and every way a session ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core import hookimpl
from cci_core.config import Config, Override, load_config
from cci_core.driver import ContainerSpec
from cci_core.naming import container_name
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import CCI, in_workspace, labels_on, run_cci, status_of, unique_name, wait_stopped

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus


def manager(config: Config, driver: IncusDriver, *plugins: tuple[str, object], persistent: bool = False
            ) -> SessionManager:
    if persistent:
        config = load_config(config.workspace, environ={}, overrides=[
            Override("incus.project", incus_env.PROJECT, "t"), Override("defaults.image", incus_env.IMAGE, "t"),
            Override("defaults.persistent", True, "t")])
    return SessionManager(config, driver, load_plugins(entry_points=False, extra=list(plugins)))


def test_run_streams_output_and_returns_the_exit_code(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                                      cci_environ: dict[str, str]) -> None:
    (config.workspace / "input.txt").write_text("from the host\n")
    result = run_cci("--workspace", str(config.workspace), "run", "--", "sh", "-c",
                     "cat input.txt; echo to-stderr >&2; pwd; exit 7", env=cci_environ)
    assert result.returncode == 7, result.stderr
    assert result.stdout == "from the host\n/workspace\n"
    assert result.stderr == "to-stderr\n"
    assert in_workspace(incus, config.workspace) == []


def test_run_files_belong_to_the_invoking_non_root_user(tmp_path: Path, driver: IncusDriver,
                                                        cci_environ: dict[str, str]) -> None:
    workspace = Path("/tmp") / f"cci-owner-{os.getpid()}"
    workspace.mkdir()
    try:
        shutil.chown(workspace, incus_env.TEST_USER, incus_env.TEST_USER)
        env = {**cci_environ, "HOME": f"/home/{incus_env.TEST_USER}"}
        result = run_cci("--workspace", str(workspace), "run", "--", "sh", "-c",
                         "id -u; mkdir sub && echo data > sub/file", env=env, user=incus_env.TEST_USER)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "1000"  # the container user
        user = os.stat(workspace)
        for path in (workspace / "sub", workspace / "sub" / "file"):
            assert (path.stat().st_uid, path.stat().st_gid) == (user.st_uid, user.st_gid) != (0, 0)
    finally:
        shutil.rmtree(workspace)


def test_root_in_the_container_cannot_own_files_on_the_host(driver: IncusDriver, cci_environ: dict[str, str]) -> None:
    """Not even where the host user's uid is the container user's (an idmapped mount would map root to root)."""
    import pwd

    uid = pwd.getpwnam(incus_env.TEST_USER).pw_uid
    workspace = Path("/tmp") / f"cci-root-owned-{os.getpid()}"
    workspace.mkdir()
    try:
        shutil.chown(workspace, incus_env.TEST_USER, incus_env.TEST_USER)
        env = {**cci_environ, "HOME": f"/home/{incus_env.TEST_USER}", "CCI_INCUS_CLAUDE_UID": str(uid)}
        name = unique_name()
        for args in (("launch", incus_env.IMAGE, name), ("stop", name),
                     ("mount", name, "ws", str(workspace), "/w", "--shift"), ("start", name),
                     ("exec", name, "--", "sh", "-c", "cp /bin/true /w/x && chown 0:0 /w/x && chmod 4755 /w/x")):
            result = run_cci("container", *args, env=env, user=incus_env.TEST_USER)
            assert result.returncode == 0, (args, result.stderr)
        planted = (workspace / "x").stat()
        assert planted.st_mode & 0o4000 and (planted.st_uid, planted.st_gid) != (0, 0)  # setuid, but not root's
        assert planted.st_uid >= 65536  # an id of the container's own unprivileged range
    finally:
        shutil.rmtree(workspace)


def test_run_passes_only_named_variables(config: Config, driver: IncusDriver, cci_environ: dict[str, str]) -> None:
    secrets = {"AWS_SECRET_ACCESS_KEY": "leak1", "GITHUB_TOKEN": "leak2", "SSH_AUTH_SOCK": "/tmp/agent.sock"}
    result = run_cci("--workspace", str(config.workspace), "--env", "WANTED=yes", "run", "--", "env",
                     env={**cci_environ, **secrets})
    assert result.returncode == 0, result.stderr
    assert "WANTED=yes" in result.stdout.splitlines()
    for name, value in secrets.items():
        assert name not in result.stdout and value not in result.stdout


def test_the_guest_api_is_off_unless_a_plugin_asks_for_it(config: Config, driver: IncusDriver,
                                                          cci_environ: dict[str, str]) -> None:
    """/dev/incus (mode 0666) would show anyone inside the host's workspace path and cci's labels."""
    probe = "if [ -e /dev/incus/sock ]; then echo open; else echo closed; fi"
    result = run_cci("--workspace", str(config.workspace), "run", "--", "sh", "-c", probe, env=cci_environ)
    assert (result.returncode, result.stdout) == (0, "closed\n"), result.stderr

    class WantsGuestAPI:
        @hookimpl
        def cci_instance_config(self) -> dict[str, str]:
            return {"security.guestapi": "true"}

    sessions = manager(config, driver, ("wants-guest-api", WantsGuestAPI()))
    container, _ctx = sessions.launch(LaunchRequest(config.workspace, kind="run"))
    try:
        assert container.exec(["sh", "-c", probe]).stdout == "open\n"
    finally:
        sessions.discard(container)


def test_missing_image_is_one_line_and_leaves_nothing(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                                      cci_environ: dict[str, str]) -> None:
    result = run_cci("--workspace", str(config.workspace), "--image", "no-such-image", "run", "--", "true",
                     env=cci_environ)
    assert result.returncode == 5
    assert result.stderr == "cci: image 'no-such-image' not found (build it with 'cci build', or pick one from 'cci image list')\n"
    assert in_workspace(incus, config.workspace) == []


def test_missing_workspace_is_one_line(tmp_path: Path, cci_environ: dict[str, str]) -> None:
    result = run_cci("--workspace", str(tmp_path / "gone"), "run", "--", "true", env=cci_environ)
    assert (result.returncode, result.stderr) == (2, f"cci: workspace {tmp_path}/gone does not exist\n")


def test_ten_concurrent_launches_get_ten_slots(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                               cci_environ: dict[str, str]) -> None:
    # the command lasts a moment: under this load Incus sometimes fails to track an instant exit
    # ("Failed to retrieve PID of executing child process"), which is not what this test is about
    command = ("--workspace", str(config.workspace), "run", "--", "sh", "-c", "cat /etc/hostname; sleep 0.5")
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: run_cci(*command, env=cci_environ, timeout=300), range(10)))
    assert [r.returncode for r in results] == [0] * 10, [r.stderr for r in results]
    names = sorted(r.stdout.strip() for r in results)
    assert names == sorted(container_name(config.workspace, slot) for slot in range(1, 11))
    assert in_workspace(incus, config.workspace) == []


def test_explicit_busy_slot_is_refused_and_left_alone(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                                      cci_environ: dict[str, str]) -> None:
    container, _ctx = manager(config, driver).launch(LaunchRequest(config.workspace, slot=3))
    result = run_cci("--workspace", str(config.workspace), "--slot", "3", "run", "--", "true", env=cci_environ)
    assert result.returncode == 2
    assert result.stderr.startswith(f"cci: slot 3 of this workspace is busy: container {container.name} exists")
    assert status_of(incus, container.name) == "running"


def test_container_is_unprivileged_with_nesting(config: Config, driver: IncusDriver, incus: pylxd.Client) -> None:
    container, _ctx = manager(config, driver).launch(LaunchRequest(config.workspace))
    instance = incus.instances.get(container.name)
    assert instance.config["security.nesting"] == "true"
    assert instance.config["security.privileged"] == "false"
    assert instance.devices["workspace"]["path"] == "/workspace"
    labels = labels_on(incus, container.name)
    assert {k: labels[k] for k in ("kind", "workspace", "slot", "tool", "mode", "state")} == {
        "kind": "session", "workspace": str(config.workspace), "slot": "1", "tool": "claude",
        "mode": "ephemeral", "state": "running"}
    uid_map = container.exec(["cat", "/proc/self/uid_map"]).stdout.split()
    assert uid_map[:2] == ["0", "1000000"]  # container root is an unprivileged host uid


def test_homes_are_isolated_between_slots(config: Config, driver: IncusDriver) -> None:
    sessions = manager(config, driver)
    first, _ = sessions.launch(LaunchRequest(config.workspace))
    second, _ = sessions.launch(LaunchRequest(config.workspace))
    assert (first.name, second.name) == (container_name(config.workspace, 1), container_name(config.workspace, 2))
    assert first.exec(["sh", "-c", "echo one > ~/slot1_file"], user=1000, group=1000,
                      environment={"HOME": "/home/code"}).exit_code == 0
    assert first.exec(["test", "-f", "/home/code/slot1_file"]).exit_code == 0
    assert second.exec(["test", "-e", "/home/code/slot1_file"]).exit_code == 1


class SaveRecorder:
    """Records the post-exit save and whether the container still existed at that moment."""

    def __init__(self, incus: pylxd.Client) -> None:
        self.incus = incus
        self.saved: list[tuple[str, bool]] = []

    @hookimpl
    def cci_post_exit_save(self, ctx, container):
        self.saved.append((ctx.session_id, self.incus.instances.exists(container.name)))


@pytest.mark.parametrize("how", ["poweroff inside", "incus stop by hand"])
@pytest.mark.parametrize("persistent", [False, True], ids=["ephemeral", "persistent"])
def test_session_that_ends_unwatched_is_finished_by_the_next_command(
    config: Config, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], how: str, persistent: bool
) -> None:
    container, ctx = manager(config, driver, persistent=persistent).launch(LaunchRequest(config.workspace))
    if how == "poweroff inside":
        container.exec(["sh", "-c", "sudo -u code sudo -n poweroff"])
    else:
        container.stop(force=True)
    assert wait_stopped(incus, container.name, 60)
    recorder = SaveRecorder(incus)
    finished = manager(config, driver, ("recorder", recorder)).reconcile()
    assert finished == [container.name]
    assert recorder.saved == [(ctx.session_id, True)]  # saved first, while the container still existed
    assert incus.instances.exists(container.name) is persistent
    if persistent:
        assert labels_on(incus, container.name)["state"] == "saved"
    listing = json.loads(run_cci("list", "--format", "json", env=cci_environ).stdout)["containers"]
    assert [row["name"] for row in listing] == ([container.name] if persistent else [])


def test_list_finishes_a_stopped_session(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                         cci_environ: dict[str, str]) -> None:
    container, _ctx = manager(config, driver).launch(LaunchRequest(config.workspace))
    container.stop(force=True)
    result = run_cci("list", env=cci_environ)
    assert result.returncode == 0 and result.stdout.strip() == "no cci containers"
    assert not incus.instances.exists(container.name)


def test_shutdown_keeps_persistent_and_deletes_ephemeral(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                                         cci_environ: dict[str, str]) -> None:
    kept, _ = manager(config, driver, persistent=True).launch(LaunchRequest(config.workspace))
    gone, _ = manager(config, driver).launch(LaunchRequest(config.workspace))
    result = run_cci("shutdown", "--timeout", "30", kept.name, gone.name, env=cci_environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{kept.name}: shut down", f"{gone.name}: shut down"]
    assert status_of(incus, kept.name) == "stopped" and labels_on(incus, kept.name)["state"] == "saved"
    assert not incus.instances.exists(gone.name)
    rows = json.loads(run_cci("list", "--format", "json", env=cci_environ).stdout)["containers"]
    assert [(row["name"], row["mode"], row["status"]) for row in rows] == [(kept.name, "persistent", "stopped")]


def test_kill_and_bulk_actions_never_touch_foreign_containers(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                                              cci_environ: dict[str, str]) -> None:
    foreign = driver.create(ContainerSpec(unique_name(), incus_env.IMAGE))
    session, _ = manager(config, driver, persistent=True).launch(LaunchRequest(config.workspace))
    refused = run_cci("kill", foreign.name, env=cci_environ)
    assert refused.returncode == 2 and "is not a cci session container" in refused.stderr
    unconfirmed = run_cci("kill", "--all", env=cci_environ)
    assert unconfirmed.returncode == 1 and "needs confirmation: nothing was done" in unconfirmed.stderr
    assert status_of(incus, session.name) == "running"
    killed = run_cci("kill", "--all", "--force", env=cci_environ)
    assert killed.returncode == 0 and killed.stdout == f"{session.name}: killed\n"
    assert not incus.instances.exists(session.name)  # kill deletes persistent containers too
    assert incus.instances.exists(foreign.name)
    unknown = run_cci("shutdown", "no-such-container", env=cci_environ)
    assert (unknown.returncode, unknown.stderr) == (5, "cci: no container named 'no-such-container' (see 'cci list')\n")


def test_clean_removes_orphans_and_stopped_sessions_only(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                                         cci_environ: dict[str, str]) -> None:
    labels = {"kind": "session", "workspace": str(config.workspace), "session": "x", "slot": "7",
              "state": "launching", "launcher": "not-this-boot:1"}
    orphan = driver.create(ContainerSpec(container_name(config.workspace, 7), incus_env.IMAGE, labels=labels))
    stopped, _ = manager(config, driver).launch(LaunchRequest(config.workspace))
    stopped.stop(force=True)
    kept, _ = manager(config, driver, persistent=True).launch(LaunchRequest(config.workspace))
    kept.stop(force=True)
    manager(config, driver).finish(kept)  # a saved persistent container is not an orphan
    foreign = driver.create(ContainerSpec(unique_name(), incus_env.IMAGE))
    build = driver.create(ContainerSpec(unique_name(), incus_env.IMAGE,
                                        labels={"kind": "build", "launcher": "not-this-boot:1"}))
    dry = run_cci("clean", "--dry-run", env=cci_environ)
    assert dry.returncode == 0
    assert sorted(dry.stdout.splitlines()) == sorted([
        f"{stopped.name}: stopped: save, then delete unless persistent",
        f"{orphan.name}: its launch was interrupted",
        f"{build.name}: the 'cci build' that made it is gone"])
    assert incus.instances.exists(orphan.name) and incus.instances.exists(stopped.name)
    done = run_cci("clean", "--force", env=cci_environ)
    assert done.returncode == 0 and done.stdout.endswith("cleaned 3 container(s)\n")
    assert not any(incus.instances.exists(gone.name) for gone in (orphan, stopped, build))
    assert incus.instances.exists(kept.name) and incus.instances.exists(foreign.name)


def test_clean_ends_an_interrupted_end_again_and_undoes_an_interrupted_restart(
        config: Config, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str]) -> None:
    from cci_core.session_record import launcher_id

    ending, _ = manager(config, driver, persistent=True).launch(LaunchRequest(config.workspace))
    restarting, _ = manager(config, driver, persistent=True).launch(LaunchRequest(config.workspace))
    busy, _ = manager(config, driver).launch(LaunchRequest(config.workspace))
    dead = "not-this-boot:1"  # the cci process that was at work is gone
    ending.set_labels({"state": "ending", "launcher": dead, "previous": "running"})
    restarting.set_labels({"state": "launching", "launcher": dead, "previous": "saved"})
    busy.set_labels({"state": "ending", "launcher": launcher_id(), "previous": "running"})  # this one is at it
    ours = {ending.name, restarting.name, busy.name}
    dry = run_cci("clean", "--dry-run", env=cci_environ)
    assert sorted(line for line in dry.stdout.splitlines() if line.split(":")[0] in ours) == sorted([
        f"{ending.name}: ending it was interrupted: end it again",
        f"{restarting.name}: its restart was interrupted: stop it and keep it saved"])
    done = run_cci("clean", "--force", env=cci_environ)
    assert done.returncode == 0, done.stderr
    for name in (ending.name, restarting.name):  # persistent: ended (saved) and kept, never deleted
        assert (status_of(incus, name), labels_on(incus, name)["state"]) == ("stopped", "saved")
    assert status_of(incus, busy.name) == "running" and labels_on(incus, busy.name)["state"] == "ending"


def test_a_run_whose_container_powers_itself_off_ends_cleanly(tmp_path: Path, incus: pylxd.Client,
                                                               cci_environ: dict[str, str]) -> None:
    # while the container shuts itself down, Incus refuses any update of it ("Instance is busy running a "stop"
    # operation") with no API operation to wait for: cci's end of the session waited for none and failed
    result = run_cci("--workspace", str(tmp_path), "run", "--", "sh", "-c",
                     "until sudo -n poweroff 2>/dev/null; do sleep 0.1; done; sleep 60", env=cci_environ)
    assert "Traceback" not in result.stderr and "busy" not in result.stderr, result.stderr
    assert result.returncode != 0 and not result.stdout, (result.returncode, result.stdout, result.stderr)
    assert in_workspace(incus, tmp_path) == []


def _ending_of_a_run(tmp_path: Path, incus: pylxd.Client, cci_environ: dict[str, str], command: str,
                     ) -> tuple[subprocess.Popen[str], str, int]:
    """Start 'cci run -- sh -c COMMAND'; once its end has begun: the process, the container and the pid of the
    process that holds the end (its launcher label)."""
    name = container_name(tmp_path, 1)
    process = subprocess.Popen([str(CCI), "--workspace", str(tmp_path), "run", "--", "sh", "-c", command],
                               env=cci_environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            labels = labels_on(incus, name)
        except pylxd_not_found():
            labels = {}
        if labels.get("state") == "ending":
            return process, name, int(labels["launcher"].rpartition(":")[2])
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise AssertionError(f"{name} never began to end")


def _exited(pid: int, timeout: float = 30) -> bool:
    """Wait until process ``pid`` has exited (reaped by init, or a zombie where nothing reaps); whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                if handle.read().rpartition(")")[2].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def pylxd_not_found() -> type[Exception]:
    from pylxd.exceptions import NotFound

    return NotFound


def test_a_run_returns_and_a_detached_process_deletes_its_container(tmp_path: Path, incus: pylxd.Client,
                                                                    cci_environ: dict[str, str]) -> None:
    process, name, helper = _ending_of_a_run(tmp_path, incus, cci_environ, "echo out; echo err >&2; sleep 1; exit 3")
    assert helper != process.pid  # the end is held by another process from its start
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (3, "out\n", "err\n")
    assert in_workspace(incus, tmp_path) == []  # the detached process completes it
    assert _exited(helper)


def test_a_detached_end_that_is_killed_is_completed_by_the_next_command(tmp_path: Path, incus: pylxd.Client,
                                                                         cci_environ: dict[str, str]) -> None:
    process, name, helper = _ending_of_a_run(tmp_path, incus, cci_environ, "sleep 1")
    os.kill(helper, signal.SIGSTOP)  # it waits for 'cci run' to let go first: it has done nothing yet
    try:
        assert process.wait(60) == 0
        listed = json.loads(run_cci("list", "--format", "json", env=cci_environ).stdout)["containers"]
        # (its processes are dead; Incus may still be taking its devices down: running, or stopped)
        assert [(row["name"], row["state"]) for row in listed if row["workspace"] == str(tmp_path)] == [(name, "ending")]
    finally:
        os.kill(helper, signal.SIGKILL)
        os.kill(helper, signal.SIGCONT)
    assert _exited(helper)
    assert labels_on(incus, name)["state"] == "ending"  # left as it was, under a dead launcher
    result = run_cci("list", env=cci_environ)
    assert (result.returncode, result.stdout.strip()) == (0, "no cci containers"), result.stderr
    assert in_workspace(incus, tmp_path) == []


def test_nothing_left_behind_by_a_run_writes_to_the_workspace_after_it_returned(tmp_path: Path,
                                                                                 cci_environ: dict[str, str]) -> None:
    # 'cci run' returns before its container has stopped for good (a detached process finishes the stop): by then
    # every process inside must be dead, those the command left running as the user and as root included
    tmp_path.chmod(0o777)  # the container user writes here as well
    writer = "while :; do echo x >> /workspace/{0}; done"
    command = (f"setsid sh -c '{writer.format('user')}' </dev/null >/dev/null 2>&1 & "
               f"sudo -n setsid sh -c '{writer.format('root')}' </dev/null >/dev/null 2>&1 & "
               "until [ -s /workspace/user ] && [ -s /workspace/root ]; do sleep 0.05; done")
    result = run_cci("--workspace", str(tmp_path), "run", "--", "sh", "-c", command, env=cci_environ)
    assert result.returncode == 0, result.stderr
    sizes = [(tmp_path / name).stat().st_size for name in ("user", "root")]
    time.sleep(1)
    assert [(tmp_path / name).stat().st_size for name in ("user", "root")] == sizes and all(sizes)
