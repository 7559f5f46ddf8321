"""`cci run` starts its command once the container is ready (booted, its network up), on a real Incus; `--no-wait`
starts it at once; a container whose network never comes up fails the run after the deadline, with one line, and
nothing is left of it."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from cci_core.config import Config
from tests import incus_env
from tests.integration.conftest import assert_error, in_workspace, run_cci

if TYPE_CHECKING:
    import pylxd

    from plugins.incus.driver import IncusDriver

#: what the command inside prints: its IPv4 addresses on eth0 and its default routes, one line each
NETWORK_SEEN = "ip -4 -o addr show dev eth0 scope global | wc -l; ip -4 route show default | wc -l"


def test_a_run_sees_its_address_and_default_route_every_time(config: Config, driver: IncusDriver,
                                                             incus: pylxd.Client,
                                                             cci_environ: dict[str, str]) -> None:
    """20 runs of 20, four at a time: before the readiness wait, the command ran with no address 3 times of 3."""
    def one(_: int) -> subprocess.CompletedProcess[str]:
        return run_cci("--workspace", str(config.workspace), "run", "--", "sh", "-c", NETWORK_SEEN, env=cci_environ)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(20)))
    assert [(result.returncode, result.stdout, result.stderr) for result in results] == [(0, "1\n1\n", "")] * 20
    assert in_workspace(incus, config.workspace) == []


@pytest.fixture(scope="module")
def image_without_dhcp() -> Iterator[str]:
    """An image like the test image without its DHCP client: its containers boot, but never get an address."""
    alias = f"cci-test-nodhcp-{uuid.uuid4().hex[:6]}"
    name = f"t-nodhcp-{uuid.uuid4().hex[:6]}"
    project = ["--project", incus_env.PROJECT]

    def incus_cli(*args: str) -> None:
        subprocess.run(["incus", *args, *project], check=True, capture_output=True, timeout=300)

    incus_cli("create", incus_env.IMAGE, name)
    try:
        incus_cli("file", "delete", f"{name}/sbin/dhclient")
        incus_cli("publish", name, "--alias", alias, "--compression", "none")
    finally:
        incus_cli("delete", "--force", name)
    yield alias
    incus_cli("image", "delete", alias)


def test_a_container_whose_network_never_comes_up_fails_the_run_after_the_deadline(
        config: Config, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str],
        image_without_dhcp: str) -> None:
    environ = {**cci_environ, "CCI_DEFAULTS_IMAGE": image_without_dhcp, "CCI_READINESS_TIMEOUT": "2"}
    started = time.monotonic()
    result = run_cci("--workspace", str(config.workspace), "run", "--", "sh", "-c", "echo ran; touch ran",
                     env=environ)
    elapsed = time.monotonic() - started
    assert_error(result, 4, "was not ready after 2 s: the network: no IPv4 address on eth0",
                 "'cci run --no-wait' does not wait")
    assert 2 <= elapsed < 30
    assert not (config.workspace / "ran").exists()  # the command never ran
    assert in_workspace(incus, config.workspace) == []  # nothing is left of the container


def test_no_wait_starts_the_command_at_once_even_without_a_network(
        config: Config, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str],
        image_without_dhcp: str) -> None:
    for flags, environ in ((["--no-wait"], {}), ([], {"CCI_READINESS_WAIT": "false"})):
        result = run_cci("--workspace", str(config.workspace), "run", *flags, "--", "sh", "-c", NETWORK_SEEN,
                         env={**cci_environ, **environ, "CCI_DEFAULTS_IMAGE": image_without_dhcp,
                              "CCI_READINESS_TIMEOUT": "1"})
        assert (result.returncode, result.stdout, result.stderr) == (0, "0\n0\n", ""), result.stderr
    assert in_workspace(incus, config.workspace) == []
