"""Snapshots of persistent session containers on the real Incus: create, change, restore, reuse; automatic snapshots
with their retention; bad input.

Sessions run the stand-in tool (``~/.stand-in/history-<id>.txt`` holds each line typed into it), so the saved
copy on the host can be compared with what the restored container holds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core import snapshots
from cci_core.config import Config, Override, load_config
from cci_core.naming import container_name
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import CCI, assert_error, labels_on, run_cci, status_of
from tests.integration.terminal import Terminal
from tests.stand_in import stand_in_workspace

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus


@pytest.fixture
def workspace(tmp_path: Path, isolated_env: Path) -> Path:
    """A workspace whose sessions run the stand-in tool."""
    return stand_in_workspace(tmp_path / "project")


def in_container(name: str, script: str, env: dict[str, str]) -> str:
    result = run_cci("container", "exec", name, "--", "sh", "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def history_in(name: str, session: str, env: dict[str, str], line: str, timeout: float = 30) -> str:
    """The session's history in the container, once it holds ``line``."""
    deadline = time.monotonic() + timeout
    while True:
        history = in_container(name, f"cat /home/code/.stand-in/history-{session}.txt", env)
        if line in history.splitlines():
            return history
        assert time.monotonic() < deadline, f"{line!r} never reached the history: {history!r}"
        time.sleep(0.2)


def saved_history(home: Path, session: str) -> str:
    return (home / ".cci" / "sessions-stand-in" / session / ".stand-in" / f"history-{session}.txt").read_text()


def without_disk_keys(config: dict[str, str]) -> dict[str, str]:
    """An instance's configuration but the keys that describe its root filesystem (taken from a restored snapshot)."""
    from cci_builtin_plugins.incus.snapshots import DISK_KEYS

    return {key: value for key, value in config.items() if key not in DISK_KEYS}


def snapshot_names(incus: pylxd.Client, name: str) -> list[str]:
    """The names of the snapshots Incus lists for instance ``name`` (URLs ``.../snapshots/NAME?project=...``)."""
    urls = incus.api.instances[name].snapshots.get().json()["metadata"]
    return sorted(url.split("?")[0].rpartition("/")[2] for url in urls)


def test_a_restore_takes_the_container_back_and_keeps_its_labels_and_the_saved_session_in_step(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path
) -> None:
    env = {**cci_environ, "TERM": "xterm"}
    name = container_name(workspace, 1)
    terminal.start("one", f"{CCI} --workspace {workspace} shell --persistent", env)
    terminal.wait_for("one", "started ")
    session = labels_on(incus, name)["session"]
    terminal.keys("one", "kept-line", "Enter")
    terminal.wait_for("one", "noted: kept-line")
    terminal.keys("one", "C-b", "d")
    terminal.wait_for("one", "CCI-EXITED-0")

    created = run_cci("snapshot", "create", name, "good", env=cci_environ)  # while it runs
    assert (created.returncode, created.stdout) == (0, f"{name}: snapshot good taken\n"), created.stderr
    assert run_cci("tmux", "send", name, "lost-line", env=cci_environ).returncode == 0
    history_in(name, session, cci_environ, "lost-line")
    in_container(name, "echo lost > /home/code/after.txt && echo lost > /etc/after-root", cci_environ)

    running = run_cci("snapshot", "restore", name, "good", env=cci_environ)
    assert_error(running, 2, f"{name} is running: stop it first with cci shutdown {name}")
    assert in_container(name, "cat /etc/after-root", cci_environ) == "lost\n"  # nothing changed

    assert run_cci("shutdown", name, env=cci_environ).returncode == 0
    assert "lost-line" in saved_history(isolated_env, session)
    labels, devices = labels_on(incus, name), incus.instances.get(name).devices
    config = without_disk_keys(incus.instances.get(name).config)
    assert labels["state"] == "saved"
    taken_while_running = incus.api.instances[name].snapshots["good"].get().json()["metadata"]["config"]
    assert taken_while_running["user.cci.state"] == "ending"  # held: never a session for another cci to take
    assert taken_while_running["volatile.last_state.power"] == "RUNNING"

    restored = run_cci("snapshot", "restore", name, "good", env=cci_environ)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == f"{name}: restored to snapshot good; its saved session updated\n"
    assert labels_on(incus, name) == labels  # not the snapshot's (taken while it ran)
    assert without_disk_keys(incus.instances.get(name).config) == config  # nor its volatile keys (power: RUNNING)
    assert incus.instances.get(name).devices == devices and status_of(incus, name) == "stopped"
    host_copy = saved_history(isolated_env, session)
    assert "kept-line" in host_copy.splitlines() and "lost-line" not in host_copy.splitlines()

    # the next start reuses it, as the snapshot left it
    terminal.start("two", f"{CCI} --workspace {workspace} shell --persistent", env)
    terminal.wait_for("two", f"resumed {session}")
    history = history_in(name, session, cci_environ, f"resumed {session}")
    assert "kept-line" in history.splitlines() and "lost-line" not in history.splitlines()
    assert in_container(name, "ls /home/code/after.txt /etc/after-root 2>&1 | wc -l; "
                              "test -e /home/code/after.txt || test -e /etc/after-root || echo gone",
                        cci_environ) == "2\ngone\n"
    assert labels_on(incus, name)["state"] == "running" and labels_on(incus, name)["session"] == session

    listed = json.loads(run_cci("snapshot", "list", name, "--format", "json", env=cci_environ).stdout)
    assert [(item["name"], item["automatic"]) for item in listed["snapshots"]] == [("good", False)]
    containers = json.loads(run_cci("list", "--format", "json", env=cci_environ).stdout)["containers"]
    assert [item["name"] for item in containers if item["workspace"] == str(workspace.resolve())] == [name]

    terminal.keys("two", "C-b", "d")
    terminal.wait_for("two", "CCI-EXITED-0")
    volume_snapshots = f"/1.0/storage-pools/{incus_env.POOL}/volumes/container/{name}/snapshots"
    assert len(driver.api.get(volume_snapshots, "listing")) == 1
    assert run_cci("kill", name, env=cci_environ).returncode == 0
    assert not incus.instances.exists(name)
    assert driver.api.raw("GET", volume_snapshots).status == 404  # its snapshots went with it


def persistent_manager(config: Config, driver: IncusDriver, **defaults: object) -> SessionManager:
    overrides = [Override("incus.project", incus_env.PROJECT, "t"), Override("defaults.image", incus_env.IMAGE, "t"),
                 Override("incus.network_nat", False, "t"),
                 Override("incus.network_subnets", incus_env.NETWORK_SUBNETS, "t"),
                 Override("defaults.persistent", True, "t"),
                 *(Override(f"defaults.{key}", value, "t") for key, value in defaults.items())]
    return SessionManager(load_config(config.workspace, environ={}, overrides=overrides), driver, load_plugins())


def test_each_start_takes_an_automatic_snapshot_and_keeps_the_newest_and_the_user_s(
        config: Config, driver: IncusDriver, incus: pylxd.Client) -> None:
    manager = persistent_manager(config, driver, snapshot_on_start=True, snapshot_keep=2)
    container, _ctx = manager.launch(LaunchRequest(config.workspace))
    assert manager.finish(driver.get(container.name))
    snapshots.create(manager, container.name, "mine")
    assert snapshot_names(incus, container.name) == ["mine"]  # a first launch has nothing to snapshot

    taken: list[str] = []
    for _start in range(3):
        reused = manager.reuse(config.workspace)
        assert reused is not None and reused[0].name == container.name
        assert labels_on(incus, container.name)["state"] == "running"
        new = set(snapshot_names(incus, container.name)) - {"mine", *taken}
        assert len(new) == 1 and snapshots.is_automatic(*new)
        taken += new
        assert manager.finish(driver.get(container.name))
    assert snapshot_names(incus, container.name) == sorted(["mine", *taken[1:]])


def test_bad_input_is_one_line_and_changes_nothing(
        config: Config, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], launched: str) -> None:
    manager = persistent_manager(config, driver)
    container, _ctx = manager.launch(LaunchRequest(config.workspace))
    assert manager.finish(driver.get(container.name))
    name = container.name
    ephemeral, _ctx = manager.launch(LaunchRequest(config.workspace, persistent=False))
    assert run_cci("snapshot", "create", name, "one", env=cci_environ).returncode == 0
    labels = labels_on(incus, name)
    held = incus.api.instances[name].snapshots["one"].get().json()["metadata"]["config"]
    assert (held["user.cci.state"], held["user.cci.previous"], labels["state"]) == ("ending", "saved", "saved")

    def refused(code: int, fragment: str, *args: str) -> None:
        assert_error(run_cci("snapshot", *args, env=cci_environ), code, fragment)

    refused(2, f"{name} already has a snapshot 'one'", "create", name, "one")
    for bad in ("bad name", "a/b", "a-", "x" * 65, "a?b"):
        refused(2, "is not valid: use 1 to 64 letters", "create", name, bad)
    refused(2, "which marks cci's automatic snapshots", "create", name, "auto-20261203-190501")
    refused(5, f"{name} has no snapshot 'nope'", "restore", name, "nope")
    refused(5, f"{name} has no snapshot 'nope'", "delete", name, "nope")
    refused(2, "is an ephemeral session container: only persistent ones have snapshots", "create", ephemeral.name, "x")
    refused(2, f"{launched} is not a cci session container", "create", launched, "x")
    refused(2, f"{launched} is not a cci session container", "restore", launched, "x")
    refused(5, "no container named", "list", "t-missing-container")

    assert snapshot_names(incus, name) == ["one"] and labels_on(incus, name) == labels
    assert snapshot_names(incus, ephemeral.name) == [] and snapshot_names(incus, launched) == []
    deleted = run_cci("snapshot", "delete", name, "one", env=cci_environ)
    assert (deleted.returncode, deleted.stdout) == (0, f"{name}: snapshot one deleted\n")
    assert snapshot_names(incus, name) == []
