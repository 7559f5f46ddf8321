"""Smoke tests against the real Incus daemon set up by scripts/incus-test-env."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.config import Override, load_config
from cci_core.errors import BackendError
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus


def as_test_user(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as the non-root test user, with that user's own minimal environment."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": f"/home/{incus_env.TEST_USER}", "LANG": "C.UTF-8"}
    return subprocess.run(["runuser", "-u", incus_env.TEST_USER, "--", sys.executable, "-c", code],
                          capture_output=True, text=True, check=False, cwd="/", env=env)


def make_driver(workspace: Path, **incus: str) -> IncusDriver:
    overrides = [Override("incus.project", incus_env.PROJECT, "test"),
                 *(Override(f"incus.{key}", value, "test") for key, value in incus.items())]
    return IncusDriver(load_config(workspace, environ={}, overrides=overrides))


def test_driver_reads_the_server_version(tmp_path: Path) -> None:
    info = make_driver(tmp_path).server_info()
    assert info.server == "incus"
    assert info.api_version == "1.0"
    cli_version = subprocess.run(["incus", "version"], capture_output=True, text=True, check=True).stdout
    assert re.search(rf"Server version: {re.escape(info.version)}$", cli_version, re.MULTILINE)
    assert info.details["storage"] in {"btrfs", "dir", "zfs", "lvm"}


def test_test_environment_is_complete(incus: pylxd.Client) -> None:
    image = incus.images.get_by_alias(incus_env.IMAGE)
    assert image.properties["cci.recipe"] and image.properties["cci.builder"] == "debootstrap"  # cci build base
    pool = incus.storage_pools.get(incus_env.POOL)
    assert pool.driver in {"btrfs", "dir"}
    bridge = incus.networks.get(incus_env.BRIDGE)
    assert bridge.config["ipv4.nat"] == "false"
    assert incus.projects.get(incus_env.PROJECT).config["features.images"] == "false"


def test_non_root_user_in_incus_admin_connects(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from cci_core.config import load_config;"
        "from cci_builtin_plugins.incus.driver import IncusDriver;"
        "print(IncusDriver(load_config(Path('/'), environ={})).server_info().version)"
    )
    result = as_test_user(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == make_driver(tmp_path).server_info().version


def test_missing_socket_is_an_actionable_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=rf"^Incus is not running: no socket at {tmp_path}/nope \(install Incus"):
        make_driver(tmp_path, socket=str(tmp_path / "nope")).server_info()


def test_socket_with_nobody_listening_is_connection_refused(tmp_path: Path) -> None:
    path = tmp_path / "dead.socket"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))  # bound, never listening: connections are refused
        with pytest.raises(BackendError, match="Incus is not running: connection refused on"):
            make_driver(tmp_path, socket=str(path)).server_info()


def test_permission_denied_names_the_group_to_join(tmp_path: Path) -> None:
    shared = Path("/tmp") / f"cci-perm-{os.getpid()}"
    shared.mkdir(mode=0o755, exist_ok=True)
    path = shared / "root-only.socket"
    try:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
            path.chmod(0o600)
            code = (
                "from pathlib import Path; from cci_core.config import Override, load_config;"
                "from cci_builtin_plugins.incus.driver import IncusDriver;"
                f"o = [Override('incus.socket', '{path}', 't'), Override('incus.group', 'incus-admin', 't')];"
                "IncusDriver(load_config(Path('/'), environ={}, overrides=o)).server_info()"
            )
            result = as_test_user(code)
    finally:
        path.unlink(missing_ok=True)
        shared.rmdir()
    assert "SocketAccessError: permission denied on" in result.stderr  # a BackendError (exit code 4)
    assert "sudo usermod -aG incus-admin $USER" in result.stderr
