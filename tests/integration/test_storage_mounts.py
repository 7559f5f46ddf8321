"""--storage directories on the real Incus: none inside the workspace, and no start (fresh, restart, or
``cci container start``) mounts a host directory that a container swapped for a link to one of the user's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.config import Config, Override, load_config
from cci_core.context import Mount
from cci_core.driver import ContainerSpec
from cci_core.errors import BackendError, UsageError
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_record import State
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import assert_error, in_workspace, labels_on, run_cci, status_of, unique_name

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus


def _secret(tmp_path: Path) -> Path:
    """A directory of the user's that no container should see."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_test").write_text("host-secret-key\n")
    return secret


def _swap_for_link(directory: Path, target: Path) -> None:
    """What root in a container that reaches ``directory`` does: it becomes a link to ``target``."""
    shutil.rmtree(directory)
    directory.symlink_to(target)


def test_a_storage_directory_in_the_workspace_is_refused_and_nothing_is_made(
    incus: pylxd.Client, tmp_path: Path, cci_environ: dict[str, str], driver: IncusDriver
) -> None:
    workspace = tmp_path / "ws"
    (workspace / "data").mkdir(parents=True)
    result = run_cci("run", "--storage", str(workspace / "data"), "--", "true", env=cci_environ, cwd=workspace)
    assert_error(result, 2, f"storage directory {workspace / 'data'} is in the workspace ({workspace})")
    assert in_workspace(incus, workspace) == []


def test_a_saved_session_whose_storage_became_a_link_is_not_started(
        config: Config, driver: IncusDriver, incus: pylxd.Client, tmp_path: Path, cci_environ: dict[str, str]) -> None:
    """The review's finding, with the swap done from outside: a restart (``cci shell --persistent``) or a
    ``cci container start`` would have mounted the link's target read-write at /storage/data."""
    data, secret = tmp_path / "data", _secret(tmp_path)
    data.mkdir()
    persistent = load_config(config.workspace, environ={}, overrides=[
        Override("incus.project", incus_env.PROJECT, "t"), Override("defaults.image", incus_env.IMAGE, "t"),
        Override("incus.network_nat", False, "t"), Override("incus.network_subnets", incus_env.NETWORK_SUBNETS, "t"),
        Override("defaults.persistent", True, "t")])
    manager = SessionManager(persistent, driver, load_plugins(entry_points=False))
    container, _ = manager.launch(LaunchRequest(config.workspace, storage=(data,)))
    assert manager.finish(driver.get(container.name))
    _swap_for_link(data, secret)

    assert_error(run_cci("container", "start", container.name, env=cci_environ), 2,
                 f"{container.name}: the source {data} of its mount /storage/data is no longer what cci mounted "
                 f"(it leads to {secret})")
    with pytest.raises(UsageError, match="is no longer what cci mounted"):
        manager.reuse(config.workspace)
    assert (status_of(incus, container.name), labels_on(incus, container.name)["state"]) == ("stopped", State.SAVED)

    data.unlink()  # the directory put back: the session starts again, with it
    data.mkdir()
    (data / "mine").write_text("kept\n")
    restarted = manager.reuse(config.workspace)
    assert restarted is not None
    assert restarted[0].exec(["cat", "/storage/data/mine"]).stdout == "kept\n"


def test_a_top_level_mount_that_followed_a_link_stops_the_container(
    incus: pylxd.Client, tmp_path: Path, driver: IncusDriver
) -> None:
    """What a race between cci's check and Incus's mount leaves (another session swapping the directory): the
    mount table shows where the mount came from; the shifted workspace mount beside it passes."""
    workspace, data, secret = tmp_path / "ws", tmp_path / "data", _secret(tmp_path)
    workspace.mkdir()
    data.symlink_to(secret)
    name = unique_name()
    container = driver.create(ContainerSpec(name, incus_env.IMAGE, labels={"workspace": str(workspace)}))
    container.configure({}, [Mount("workspace", workspace, "/workspace", shift=True),
                             Mount("storage0", data, "/storage/data", shift=True)])
    with pytest.raises(BackendError, match=f"{name} was stopped: the mount.s. storage0 did not come from"):
        container.start()
    assert status_of(incus, name) == "stopped"


def test_a_mount_added_to_a_running_container_that_followed_a_link_stops_it(
    incus: pylxd.Client, tmp_path: Path, driver: IncusDriver
) -> None:
    """``cci container mount`` on a running container: Incus mounts at once, so the check runs at once."""
    data, secret = tmp_path / "data", _secret(tmp_path)
    data.mkdir()
    name = unique_name()
    container = driver.create(ContainerSpec(name, incus_env.IMAGE))
    container.start()
    container.add_mount(Mount("extra", data, "/mnt/data"))  # a real directory: it stays running
    assert status_of(incus, name) == "running"
    (tmp_path / "link").symlink_to(secret)
    with pytest.raises(BackendError, match=f"{name} was stopped: the mount.s. other did not come from"):
        container.add_mount(Mount("other", tmp_path / "link", "/mnt/other"))
    assert status_of(incus, name) == "stopped"
