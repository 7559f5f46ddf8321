"""Mounts into a running (warm) Incus container: read-only ones stay idmapped, a writable file is refused, and a
mount inside another host mount is not removed while it runs. Incus adds a plain bind mount to a running container
by liblxc's mount injection, which empties a file at its target (through the workspace's mount: the host's file)
and, at a removal, deletes it; seen with Incus 6.0.4 (tests/integration/test_warm_pool.py runs the real thing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cci_builtin_plugins.incus.connection import Endpoint
from cci_builtin_plugins.incus.container import IncusContainer
from cci_builtin_plugins.incus.idmap import UserMap
from cci_core.context import Mount
from cci_core.errors import BackendError


class RecordingAPI:
    """Records the PATCHes; answers GETs with the instance (of the local daemon)."""

    project = "default"
    endpoint = Endpoint(socket=Path("/var/lib/incus/unix.socket"))

    def __init__(self, instance: dict[str, Any]) -> None:
        self.instance = instance
        self.patches: list[dict[str, Any]] = []

    def call(self, method: str, path: str, action: str, body: Any = None, **_: Any) -> Any:
        self.patches.append(body)
        return {}

    def get(self, path: str, action: str, **_: Any) -> Any:
        return self.instance


def container(status: str, devices: dict[str, Any] | None = None) -> tuple[IncusContainer, RecordingAPI]:
    instance = {"name": "c", "status": status, "config": {}, "expanded_devices": devices or {}}
    api = RecordingAPI(instance)
    return IncusContainer(api, instance, UserMap(1001, 1001, 1000)), api  # type: ignore[arg-type]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / ".git" / "hooks").mkdir(parents=True)
    (tmp_path / ".git" / "config").write_text("[core]\n")
    return tmp_path


def protection(workspace: Path) -> list[Mount]:
    return [Mount("workspace", workspace, "/workspace", shift=True),
            Mount("guard-config", workspace / ".git/config", "/workspace/.git/config", shift=True, readonly=True),
            Mount("guard-hooks", workspace / ".git/hooks", "/workspace/.git/hooks", shift=True, readonly=True)]


def test_a_stopped_container_gets_plain_binds_and_a_raw_idmap(workspace: Path) -> None:
    made, api = container("Stopped")
    made.configure({}, protection(workspace))
    devices = api.patches[-1]["devices"]
    assert all(device.get("shift") != "true" for device in devices.values())
    assert api.patches[-1]["config"]["raw.idmap"] == "uid 1001 1000\ngid 1001 1000"


def test_a_running_container_keeps_read_only_mounts_idmapped(workspace: Path) -> None:
    made, api = container("Running")
    made.configure({}, protection(workspace))
    devices = api.patches[-1]["devices"]
    assert devices["guard-config"]["shift"] == "true" and devices["guard-hooks"]["shift"] == "true"
    assert devices["workspace"].get("shift") != "true"  # writable: your uid alone, through the raw.idmap


def test_a_writable_file_is_never_mounted_into_a_running_container(workspace: Path) -> None:
    made, api = container("Running")
    with pytest.raises(BackendError, match="a writable file cannot be mounted into a running container"):
        made.configure({}, [Mount("data", workspace / ".git/config", "/workspace/x", shift=True)])
    assert not api.patches


def test_a_mount_inside_a_host_mount_is_not_removed_while_it_runs(workspace: Path) -> None:
    devices = {"workspace": {"type": "disk", "source": str(workspace), "path": "/workspace"},
               "guard-config": {"type": "disk", "source": str(workspace / ".git/config"),
                                "path": "/workspace/.git/config", "readonly": "true"}}
    made, api = container("Running", devices)
    with pytest.raises(BackendError, match="only be removed while the container is stopped"):
        made.remove_mounts(["guard-config"])
    assert not api.patches
