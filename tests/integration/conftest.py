"""Fixtures for tests against the real Incus: a config and environment pointing at the test project and image."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import pytest

from cci_core.config import Config, NetworkConfig, Override, load_config
from cci_core.driver import ContainerInfo
from cci_core.errors import CciError
from cci_builtin_plugins.incus.driver import IncusDriver
from cci_builtin_plugins.incus.networks import network_name
from cci_builtin_plugins.network.restricted import RestrictedPolicy
from tests import incus_env
from tests.integration.terminal import Terminal

if TYPE_CHECKING:
    import pylxd

CCI = Path(sys.executable).with_name("cci")
#: the prefix of the instance config keys that hold cci's labels (the format cci's containers keep)
LABEL_PREFIX = "user.cci."


@pytest.fixture
def cci_environ(isolated_env: Path) -> dict[str, str]:
    """The environment a cci subprocess gets: the test project and image, an isolated home, nothing else."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(isolated_env),
        "LANG": "C.UTF-8",
        "CCI_INCUS_PROJECT": incus_env.PROJECT,
        "CCI_DEFAULTS_IMAGE": incus_env.IMAGE,
        # sessions get the default policy (restricted) on networks with NAT off: nothing leaves the machine
        "CCI_INCUS_NETWORK_NAT": "false",
        "CCI_INCUS_NETWORK_SUBNETS": incus_env.NETWORK_SUBNETS,
    }


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A merged config for a fresh workspace, pointing at the test project and image."""
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    overrides = [Override("incus.project", incus_env.PROJECT, "test"),
                 Override("defaults.image", incus_env.IMAGE, "test"),
                 Override("incus.network_nat", False, "test"),
                 Override("incus.network_subnets", incus_env.NETWORK_SUBNETS, "test")]
    return load_config(workspace, environ={}, overrides=overrides)


_NAMED: set[str] = set()
"""Names handed out by :func:`unique_name` during the current test."""


@pytest.fixture
def driver(config: Config, tmp_path: Path) -> Iterator[IncusDriver]:
    """The Incus driver on the test project.

    Afterwards it deletes the containers this test made: those for a workspace under the
    test's ``tmp_path`` and those named by :func:`unique_name`. Containers of other tests
    (or of a concurrent test run) are left alone.
    """
    driver = IncusDriver(config)
    _NAMED.clear()
    yield driver
    owned_root = str(tmp_path.resolve())
    remove_containers(driver, lambda info: info.name in _NAMED or (workspace := info.labels.get("workspace", ""))
                      == owned_root or workspace.startswith(owned_root + "/"))
    _NAMED.clear()


def remove_containers(driver: IncusDriver, chosen: Callable[[ContainerInfo], bool]) -> None:
    """Stop and delete the containers ``chosen`` picks; one deleted meanwhile (by a 'cci run''s detached end) is
    gone as wished."""
    def remove(name: str) -> None:
        container = driver.get(name)
        if container.status() != "stopped":
            try:
                container.stop(force=True)
            except CciError:
                if container.status() != "stopped":  # (its stop was under way: a 'cci run' returns before it ends)
                    raise
        container.delete()

    for info in driver.list_containers():
        if chosen(info):
            try:
                remove(info.name)
            except CciError:
                if driver.exists(info.name):
                    remove(info.name)  # once more: its stop or delete may have been under way


@pytest.fixture(scope="session")
def incus() -> pylxd.Client:
    """pylxd on the test project: a client independent of cci's, with which tests check what cci did to Incus."""
    import pylxd

    return pylxd.Client(endpoint=str(incus_env.SOCKET), project=incus_env.PROJECT)


def labels_on(incus: pylxd.Client, name: str) -> dict[str, str]:
    """cci's labels on instance ``name``, as Incus has them."""
    config = incus.instances.get(name).config
    return {key[len(LABEL_PREFIX):]: value for key, value in config.items() if key.startswith(LABEL_PREFIX)}


def status_of(incus: pylxd.Client, name: str) -> str:
    """The status of instance ``name`` in lower case (``running``, ``stopped``...)."""
    return str(incus.instances.get(name).status).lower()


def in_workspace(incus: pylxd.Client, workspace: Path, timeout: float = 60) -> list[str]:
    """Names of the instances cci labelled with ``workspace`` (other tests may use the project meanwhile), once
    those a detached end is at work on (``ending`` under a live launcher: a 'cci run' that returned) are gone."""
    import time

    from cci_core.session_record import launcher_alive

    deadline = time.monotonic() + timeout
    while True:
        instances = [instance for instance in incus.instances.all(recursion=1)
                     if instance.config.get(LABEL_PREFIX + "workspace") == str(workspace)]
        if time.monotonic() > deadline or not any(
                instance.config.get(LABEL_PREFIX + "state") == "ending"
                and launcher_alive(instance.config.get(LABEL_PREFIX + "launcher", "")) for instance in instances):
            return [instance.name for instance in instances]
        time.sleep(0.1)


def aliased(incus: pylxd.Client, prefix: str) -> dict[str, tuple[str, ...]]:
    """The images with an alias starting with ``prefix``: fingerprint -> alias names, as Incus lists them."""
    images = {image.fingerprint: tuple(alias["name"] for alias in image.aliases) for image in incus.images.all()}
    return {fingerprint: names for fingerprint, names in images.items()
            if any(name.startswith(prefix) for name in names)}


def wait_until_gone(incus: pylxd.Client, name: str, timeout: float = 60) -> None:
    """Wait until container ``name`` no longer exists (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while incus.instances.exists(name):
        assert time.monotonic() < deadline, f"{name} still exists after {timeout} s"
        time.sleep(0.2)


def wait_stopped(incus: pylxd.Client, name: str, timeout: float = 60) -> bool:
    """Whether instance ``name`` stops (or is deleted) within ``timeout`` seconds.

    While systemd powers off, Incus's status flips between running and stopped for a
    moment, so a status read now and then proves nothing: a stop is proven by Incus's
    lifecycle event, or by the instance and the listing both saying it is stopped
    once the events are watched.
    """
    from pylxd.client import EventType
    from pylxd.exceptions import NotFound

    events = incus.events(event_types={EventType.Lifecycle})
    events.resource += "&" + urlencode({"project": incus_env.PROJECT})  # pylxd leaves the project out
    events.connect()
    threading.Thread(target=events.run, daemon=True).start()
    try:
        try:
            if status_of(incus, name) == "stopped" and name not in {
                    instance.name for instance in incus.instances.all(recursion=1) if instance.status != "Stopped"}:
                return True
        except NotFound:
            return True
        deadline = time.monotonic() + timeout
        while not any(_stops(event, name) for event in list(events.messages)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
    finally:
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            events.close()


def _stops(event: dict[str, Any], name: str) -> bool:
    """Whether a lifecycle event says that instance ``name`` stopped or was deleted."""
    metadata = event.get("metadata") or {}
    return (metadata.get("action") in ("instance-shutdown", "instance-stopped", "instance-deleted")
            and urlsplit(str(metadata.get("source", ""))).path.rstrip("/").endswith(f"/instances/{name}"))


def run_cci(*args: str, env: dict[str, str], cwd: Path | None = None, user: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``cci`` as a separate process (as ``user`` when given), capturing its output; its
    standard input is empty (a command reads end of file at once: cci passes its input on)."""
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run([*prefix, str(CCI), *args], env=env, cwd=cwd or "/", capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def unique_name() -> str:
    """A container name no other test (or concurrent test run) uses."""
    from uuid import uuid4

    name = f"t-{uuid4().hex[:8]}"
    _NAMED.add(name)
    return name


def assert_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """cci failed with ``code`` and one ``cci:`` line on stderr containing every fragment, nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cci: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


#: the default policy's bridge in tests (NAT off: not the bridge of real sessions on this machine)
RESTRICTED_NETWORK = network_name(RestrictedPolicy().plan(NetworkConfig()), nat=False)


def nic_network(incus: pylxd.Client, name: str) -> str:
    """The network a container's eth0 is on."""
    return str(incus.instances.get(name).expanded_devices["eth0"]["network"])


@pytest.fixture
def launched(driver: IncusDriver, cci_environ: dict[str, str]) -> str:
    """The name of a running container made with 'cci container launch' (the driver fixture deletes it)."""
    name = unique_name()
    result = run_cci("container", "launch", incus_env.IMAGE, name, env=cci_environ)
    assert result.returncode == 0, result.stderr
    return name


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    """A fresh host terminal (tmux server) per test, killed afterwards."""
    from uuid import uuid4

    term = Terminal(f"cci-test-{os.getpid()}-{uuid4().hex[:8]}")  # never the server of a test before, still dying
    yield term
    subprocess.run(["tmux", "-L", term.socket, "kill-server"], capture_output=True, check=False)


class ClaudeImage(NamedTuple):
    """The real default image: its alias and the Claude Code version it records."""

    alias: str
    version: str


#: the image property holding the Claude Code version an image carries
CLAUDE_VERSION_PROPERTY = "cci.tool.claude.version"


@pytest.fixture
def claude_image(driver: IncusDriver) -> ClaudeImage:
    """The real default image with Claude Code that scripts/incus-test-env builds; fails (never skips) without it."""
    fix = "run 'sudo scripts/incus-test-env' (it builds the image)"
    found = [image for image in driver.list_images() if incus_env.CLAUDE_IMAGE in image.aliases]
    if not found:
        pytest.fail(f"Incus test image {incus_env.CLAUDE_IMAGE} missing: {fix}", pytrace=False)
    version = found[0].properties.get(CLAUDE_VERSION_PROPERTY, "")
    if not version:
        pytest.fail(f"image {incus_env.CLAUDE_IMAGE} records no {CLAUDE_VERSION_PROPERTY}: {fix}", pytrace=False)
    return ClaudeImage(incus_env.CLAUDE_IMAGE, version)


@pytest.fixture
def claude_environ(cci_environ: dict[str, str], claude_image: ClaudeImage) -> dict[str, str]:
    """:func:`cci_environ` with the real default image: sessions run Claude Code."""
    return {**cci_environ, "CCI_DEFAULTS_IMAGE": claude_image.alias}
