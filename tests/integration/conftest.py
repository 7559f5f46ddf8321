"""Fixtures for tests against the real Incus: a config and environment pointing at the test project and image."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cci_core.config import Config, Override, load_config
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env

CCI = Path(sys.executable).with_name("cci")


@pytest.fixture
def cci_environ(isolated_env: Path) -> dict[str, str]:
    """The environment a cci subprocess gets: the test project and image, an isolated home, nothing else."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(isolated_env),
        "LANG": "C.UTF-8",
        "CCI_INCUS_PROJECT": incus_env.PROJECT,
        "CCI_DEFAULTS_IMAGE": incus_env.IMAGE,
    }


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A merged config for a fresh workspace, pointing at the test project and image."""
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    overrides = [Override("incus.project", incus_env.PROJECT, "test"),
                 Override("defaults.image", incus_env.IMAGE, "test")]
    return load_config(workspace, environ={}, overrides=overrides)


@pytest.fixture
def driver(config: Config) -> Iterator[IncusDriver]:
    """The Incus driver on the test project; containers left in the project are deleted afterwards."""
    driver = IncusDriver(config)
    before = {info.name for info in driver.list_containers()}
    yield driver
    for info in driver.list_containers():
        if info.name not in before:
            container = driver.get(info.name)
            if info.status != "stopped":
                container.stop(force=True)
            container.delete()


def run_cci(*args: str, env: dict[str, str], cwd: Path | None = None, user: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``cci`` as a separate process (as ``user`` when given), capturing its output."""
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run([*prefix, str(CCI), *args], env=env, cwd=cwd or "/", capture_output=True, text=True,
                          timeout=timeout, check=False)


def wait_for_status(driver, name: str, status: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Wait until the backend's listing shows ``status`` for ``name`` (polls; fails after ``timeout`` s).

    The listing is what cci's commands see. While systemd powers a container off, Incus
    may briefly report it stopped and then running again (PID 1 re-executes into
    systemd-shutdown), so the status must hold for three polls in a row.
    """
    import time

    deadline, streak = time.monotonic() + timeout, 0
    while streak < 3:
        current = next(info.status for info in driver.list_containers() if info.name == name)
        streak = streak + 1 if current == status else 0
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not become {status} within {timeout} s")
        time.sleep(0.1)
