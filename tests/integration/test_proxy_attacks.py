"""A hostile agent (root in its container) against its plan's proxy, on the real Incus (issue 16's red team).

Each test is an attack that worked once, or one that must keep failing; docs/networking.md ("What the proxy does
not stop") lists what remains. The proxies here are these tests' own: each test's plan has a
name no other test uses.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cci_builtin_plugins.incus.driver import IncusDriver
from tests.integration.conftest import run_cci
from tests.integration.test_proxy_egress import PROXY_IMAGE
from tests.network_hosts import INTERNET_HOSTS
from tests.workspace_config import write_trusted

pytestmark = pytest.mark.incus


@pytest.fixture
def own_plan(claude_environ: dict[str, str], driver: IncusDriver, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A workspace whose proxy plan (one allowed name of its own) no other test shares, and that name; the plan's
    network (and its proxy) is deleted afterwards, by name."""
    name = f"attack-{uuid.uuid4().hex[:8]}.ccit.test"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    write_trusted(workspace, f'[network]\nmode = "proxy"\nallowed_domains = ["{name}"]\n'
                             f'hosts = {{ "{name}" = "{INTERNET_HOSTS[0]}" }}\nproxy_image = "{PROXY_IMAGE}"\n')
    yield workspace, name
    for network in driver.policy_networks():
        if name in network.plan.settings.get("allowed_domains", []):
            run_cci("network", "delete", network.name, env=claude_environ)


#: inside: hold HELD connections to the proxy, each with a request head never finished (as a tool that leaks them,
#: or an agent that wants the proxy for itself), then ask for a name no rule allows; print how the proxy answered
HOLD_AND_ASK = """
import resource, socket, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for _ in range({held}):
    connection = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    connection.sendall(b"GET http://{name}/ HTTP/1.1\\r\\nHost: {name}\\r\\n")
    held.append(connection)
ask = socket.create_connection(("127.0.0.1", 3128), timeout=10)
ask.sendall(b"GET http://unlisted.ccit.test/ HTTP/1.1\\r\\nHost: unlisted.ccit.test\\r\\nConnection: close\\r\\n\\r\\n")
try:
    print("answer:", ask.recv(64).split(b"\\r\\n")[0].decode())
except OSError as exc:
    print("answer: none,", type(exc).__name__)
"""


def test_many_connections_held_by_one_agent_leave_the_proxy_answering(
        own_plan: tuple[Path, str], claude_environ: dict[str, str]) -> None:
    """Squid ran with the default 1024 file descriptors: 1500 connections held open by one container (a few
    processes' worth of a leaky tool) left it answering nobody, every other container sharing the proxy
    included ("Your cache is running out of filedescriptors")."""
    workspace, name = own_plan
    result = run_cci("run", "--", "python3", "-c", HOLD_AND_ASK.format(held=1500, name=name), env=claude_environ,
                     cwd=workspace, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "answer: HTTP/1.1 403 Forbidden" in result.stdout, result.stdout
