"""A saved persistent container started again on the real Incus is configured as a launch would be: this
invocation's --storage replaces the earlier one's device, and what plugins contribute reaches its processes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core import hookimpl
from cci_core.config import Config, Override, load_config
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus


class Contributes:
    @hookimpl
    def cci_environment(self, ctx):  # type: ignore[no-untyped-def]
        return {"FROM_PLUGIN": f"for {ctx.container_name}"}


def test_a_reuse_mounts_this_invocations_storage_and_passes_the_plugins_environment(
        config: Config, driver: IncusDriver, incus: pylxd.Client, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "mine").write_text("second\n")
    persistent = load_config(config.workspace, environ={}, overrides=[
        Override("incus.project", incus_env.PROJECT, "t"), Override("defaults.image", incus_env.IMAGE, "t"),
        Override("incus.network_nat", False, "t"), Override("incus.network_subnets", incus_env.NETWORK_SUBNETS, "t"),
        Override("defaults.persistent", True, "t")])
    manager = SessionManager(persistent, driver, load_plugins(entry_points=False, extra=[("contributes", Contributes())]))
    container, _ctx = manager.launch(LaunchRequest(config.workspace, storage=(first,)))
    assert manager.finish(driver.get(container.name))

    reused = manager.reuse(config.workspace, storage=(second,))
    assert reused is not None
    running, ctx = reused
    disks = {name: device for name, device in incus.instances.get(container.name).devices.items()
             if device.get("type") == "disk" and "source" in device}
    assert {name: (device["source"], device["path"]) for name, device in disks.items()} == {
        "workspace": (str(config.workspace.resolve()), "/workspace"),
        "storage0": (str(second.resolve()), "/storage/second"),
    }
    assert running.exec(["cat", "/storage/second/mine"]).stdout == "second\n"
    uid = driver.container_uid
    echoed = running.exec(["sh", "-c", 'echo "$FROM_PLUGIN"'], user=uid, group=uid,
                          environment=manager.user_environment(ctx))
    assert echoed.stdout == f"for {container.name}\n"


def test_a_reuse_refuses_storage_inside_a_storage_directory_it_keeps(
        config: Config, driver: IncusDriver, incus: pylxd.Client, tmp_path: Path) -> None:
    from cci_core.errors import UsageError

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    (second / "inner").mkdir(parents=True)
    persistent = load_config(config.workspace, environ={}, overrides=[
        Override("incus.project", incus_env.PROJECT, "t"), Override("defaults.image", incus_env.IMAGE, "t"),
        Override("incus.network_nat", False, "t"), Override("incus.network_subnets", incus_env.NETWORK_SUBNETS, "t"),
        Override("defaults.persistent", True, "t")])
    manager = SessionManager(persistent, driver, load_plugins())
    container, _ctx = manager.launch(LaunchRequest(config.workspace, storage=(first, second)))
    assert manager.finish(driver.get(container.name))
    devices = incus.instances.get(container.name).devices

    with pytest.raises(UsageError, match=r"storage directory .*/second/inner is in another storage directory"):
        manager.reuse(config.workspace, storage=(second / "inner",))  # storage0 replaced, storage1 (second) kept
    instance = incus.instances.get(container.name)
    assert instance.devices == devices  # nothing configured
    assert (instance.status, instance.config["user.cci.state"]) == ("Stopped", "saved")  # put back: usable
