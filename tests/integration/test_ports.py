"""Published ports against the real Incus: a server in the container reached from the host's loopback, and from
nowhere else; nothing in the container reaches the host through them; taken host ports and bad specs.

The server is a few lines of perl (the test image has no python3 and no nc). "Elsewhere" is a test host in a
network namespace (tests/network_hosts.py) connecting to this machine's addresses.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.driver import PublishedPort
from cci_core.naming import container_name
from cci_core.errors import BackendError
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import CCI, RESTRICTED_NETWORK, assert_error, in_workspace, run_cci, status_of
from tests.integration.terminal import Terminal
from tests.integration.test_proxy_policy import hosts  # noqa: F401 (the module's fixture: the test hosts, shared)
from tests.network_hosts import INTERNET_GATEWAY, TestHosts
from tests.workspace_config import write_trusted

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

#: the port the server listens on inside the container
INSIDE = 8000
#: answers "hello <its argument>" to each connection, and ends at a connection that sends "quit"
SERVER = ('use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => $ARGV[0], LocalPort => $ARGV[1], '
          'Listen => 16, ReuseAddr => 1) or die "listen: $!"; $| = 1; '
          'while (my $c = $s->accept) { print $c "hello $ARGV[2]\\n"; my $line = <$c>; close $c; '
          'exit 0 if defined $line && $line =~ /^quit/ }')


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    made = tmp_path / "ws"
    made.mkdir()
    return made


def free_port() -> int:
    """A TCP port free on every address of this machine now."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port something on the host listens on (127.0.0.1) for the block's duration."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])


def ask(port: int, line: str = "bye", address: str = "127.0.0.1") -> str:
    """The first line ``address:port`` answers ("" when the connection is refused or closed at once)."""
    try:
        with socket.create_connection((address, port), timeout=5) as conn:
            reader = conn.makefile("rb")
            answer = reader.readline().decode().strip()
            with contextlib.suppress(OSError):
                conn.sendall(line.encode() + b"\n")
            return answer
    except OSError:
        return ""


def wait_answer(port: int, token: str, timeout: float = 120) -> None:
    """Wait until the server in the container answers on host port ``port`` (it starts with the container)."""
    deadline = time.monotonic() + timeout
    while (answer := ask(port)) != f"hello {token}":
        assert time.monotonic() < deadline, f"no answer on 127.0.0.1:{port} within {timeout:.0f} s (last: {answer!r})"
        time.sleep(0.2)


def from_test_host(address: str, port: int) -> str:
    """What ``address:port`` of this machine answers a test host in a network namespace ("blocked": nothing)."""
    script = (f"timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port} && head -n 1 <&3' 2>/dev/null "
              "|| echo blocked")
    result = subprocess.run(["ip", "netns", "exec", "ccit-inet", "bash", "-c", script], capture_output=True,
                            text=True, timeout=30, check=True)
    return result.stdout.strip()


@contextlib.contextmanager
def serving(env: dict[str, str], workspace: Path, *flags: str, bind: str = "127.0.0.1") -> Iterator[str]:
    """``cci [FLAGS] run`` of the server, running for the block (its token yielded); it must end with exit 0."""
    token = uuid.uuid4().hex[:12]
    run = subprocess.Popen([str(CCI), *flags, "run", "--", "perl", "-e", SERVER, bind, str(INSIDE), token],
                           env=env, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield token
    finally:
        deadline = time.monotonic() + 60
        while run.poll() is None and time.monotonic() < deadline:
            names = in_workspace_names(workspace)
            if names:  # the server may not listen yet: ask it to stop through the container itself
                run_cci("container", "exec", names[0], "--", "bash", "-c",
                        f"exec 3<>/dev/tcp/127.0.0.1/{INSIDE} && head -n 1 <&3 && echo quit >&3", env=env, timeout=30)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.wait(timeout=1)
        if run.poll() is None:
            run.kill()
        stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, (stdout, stderr)


def in_workspace_names(workspace: Path) -> list[str]:
    import pylxd

    client = pylxd.Client(endpoint=str(incus_env.SOCKET), project=incus_env.PROJECT)
    return in_workspace(client, workspace.resolve())


def running_container(workspace: Path, timeout: float = 120) -> str:
    """The name of the workspace's session container, once there is one."""
    deadline = time.monotonic() + timeout
    while not (names := in_workspace_names(workspace)):
        assert time.monotonic() < deadline, "no container for the workspace"
        time.sleep(0.2)
    return names[0]


@pytest.mark.parametrize("network, bind", [("restricted", "127.0.0.1"), ("restricted", "0.0.0.0"),
                                           ("proxy", "127.0.0.1")])
def test_a_published_port_leads_from_the_hosts_loopback_to_the_server_inside_and_from_nowhere_else(
        hosts: TestHosts, cci_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client, workspace: Path,
        network: str, bind: str) -> None:
    env = {**cci_environ, "CCI_NETWORK_ALLOWED_DOMAINS": "ports.ccit.test"}  # the proxy plan needs one name
    loopback, everywhere = free_port(), free_port()
    flags = ("--network", network, "--port", f"{loopback}:{INSIDE}", "--port", f"0.0.0.0:{everywhere}:{INSIDE}")
    with serving(env, workspace, *flags, bind=bind) as token:
        wait_answer(loopback, token)
        name = running_container(workspace)
        if network == "proxy":  # the agent has no network interface at all, and the port works all the same
            interfaces = driver.get(name).exec(["ls", "/sys/class/net"]).stdout.split()
            assert interfaces == ["lo"]
        # from a test host, toward this machine's addresses: the loopback port is not there, the other one is
        bridge = str(incus.networks.get(RESTRICTED_NETWORK).config["ipv4.address"]).split("/")[0]
        for address in (INTERNET_GATEWAY, bridge):
            assert from_test_host(address, loopback) == "blocked"
            assert from_test_host(address, everywhere) == f"hello {token}"  # (the probe can see a port)
        listed = json.loads(run_cci("list", "--format", "json", env=env).stdout)
        (row,) = [row for row in listed["containers"] if row["name"] == name]
        assert sorted((port["address"], port["host_port"], port["container_port"]) for port in row["ports"]) == \
            sorted([("127.0.0.1", loopback, INSIDE), ("0.0.0.0", everywhere, INSIDE)])


def test_port_add_and_remove_on_a_running_session_and_nothing_leads_back_to_the_host(
        cci_environ: dict[str, str], driver: IncusDriver, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = cci_environ
    port = free_port()
    with serving(env, workspace) as token, host_only_service() as secret_port:
        name = running_container(workspace)
        added = run_cci("port", "add", name, f"{port}:{INSIDE}", env=env)
        assert added.returncode == 0, added.stderr
        assert added.stdout == f"{name}: published 127.0.0.1:{port} -> container port {INSIDE}\n"
        wait_answer(port, token)
        listed = json.loads(run_cci("port", "list", name, "--format", "json", env=env).stdout)
        assert listed == {"container": name, "ports": [{"address": "127.0.0.1", "host_port": port,
                                                        "container_port": INSIDE, "url": f"http://127.0.0.1:{port}"}]}

        # inside: the server answers on its own loopback (the probe works), and nothing else leads anywhere
        container = driver.get(name)
        probe = "timeout 3 bash -c 'exec 3<>/dev/tcp/{0}/{1} && head -n 1 <&3' 2>/dev/null || echo blocked"
        gateway = container.exec(["sh", "-c", "ip -4 route show default | cut -d' ' -f3"]).stdout.strip()
        seen = {target: container.exec(["bash", "-c", probe.format(*target.split(":"))]).stdout.strip()
                for target in (f"127.0.0.1:{INSIDE}", f"127.0.0.1:{secret_port}", f"127.0.0.1:{port}",
                               f"{gateway}:{port}", f"{gateway}:{secret_port}")}
        assert seen == {f"127.0.0.1:{INSIDE}": f"hello {token}", f"127.0.0.1:{secret_port}": "blocked",
                        f"127.0.0.1:{port}": "blocked", f"{gateway}:{port}": "blocked",
                        f"{gateway}:{secret_port}": "blocked"}

        # a taken host port: one line, nothing added (checked first; and when Incus is the one to find out)
        with taken_port() as taken:
            result = run_cci("port", "add", name, f"{taken}:{INSIDE}", env=env)
            assert_error(result, 4, f"127.0.0.1:{taken} is in use on the host")
            from cci_builtin_plugins.incus import ports

            monkeypatch.setattr(ports, "check_free", lambda *args, **kwargs: None)  # as if taken just after the check
            with pytest.raises(BackendError) as lost:
                driver.get(name).publish_port(PublishedPort("127.0.0.1", taken, INSIDE))
            assert lost.value.message == f"127.0.0.1:{taken} is in use on the host"
        assert [p.host_port for p in driver.get(name).published_ports()] == [port]

        for bad, message in ((f"70000:{INSIDE}", "'70000:8000': the host port '70000' is not a number"),
                             (f"{port}:{INSIDE}", f"host port {port} is given twice, or {name} publishes it already")):
            assert_error(run_cci("port", "add", name, bad, env=env), 2, message)
        assert_error(run_cci("port", "remove", name, "9", env=env), 5, f"{name} publishes no port 9")

        removed = run_cci("port", "remove", name, str(port), env=env)
        assert removed.returncode == 0, removed.stderr
        assert ask(port) == ""  # refused: the device is gone with its listener
        assert driver.get(name).published_ports() == []


@contextlib.contextmanager
def host_only_service() -> Iterator[int]:
    """A service on the host's loopback answering "host secret" (no container may reach it)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(b"host secret\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


def test_a_taken_host_port_at_launch_is_one_line_and_leaves_nothing(
        cci_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client, workspace: Path) -> None:
    with taken_port() as taken:
        result = run_cci("--port", f"{taken}:{INSIDE}", "run", "--", "true", env=cci_environ, cwd=workspace)
        assert_error(result, 4, f"127.0.0.1:{taken} is in use on the host")
    assert in_workspace(incus, workspace.resolve()) == []


def test_a_port_taken_while_the_container_was_stopped_fails_its_start_in_one_line(
        cci_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client, launched: str) -> None:
    container = driver.get(launched)
    container.stop(force=True)
    port = free_port()
    container.publish_port(PublishedPort("127.0.0.1", port, INSIDE))
    with socket.socket() as holder:  # taken only after it was published on the stopped container
        holder.bind(("127.0.0.1", port))
        holder.listen(1)
        result = run_cci("container", "start", launched, env=cci_environ)
        assert_error(result, 4, f"127.0.0.1:{port} is in use on the host")
        assert status_of(incus, launched) == "stopped"
    started = run_cci("container", "start", launched, env=cci_environ)
    assert started.returncode == 0, started.stderr


def test_a_configured_port_another_session_publishes_is_left_out_of_the_next_one_and_a_named_one_refused(
        cci_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client, workspace: Path, tmp_path: Path,
        launched: str) -> None:
    env, port = cci_environ, free_port()
    write_trusted(workspace, f'[ports]\npublish = ["{port}:{INSIDE}"]\n')
    stopped = driver.get(launched)
    stopped.stop(force=True)
    stopped.publish_port(PublishedPort("127.0.0.1", port, INSIDE))  # free now: kept by a stopped container
    with serving(env, workspace) as token:
        wait_answer(port, token)
        holder = running_container(workspace)
        # a second session of the workspace (a 'cci run' here) starts, without the port, and says who has it
        second = run_cci("run", "--", "true", env=env, cwd=workspace)
        assert second.returncode == 0, second.stderr
        (warned,) = [line for line in second.stderr.splitlines() if f"127.0.0.1:{port}" in line]
        assert warned.startswith(f"cci: warning: 127.0.0.1:{port} is not published for this session: {holder} "
                                 "publishes it (once it is free, 'cci port add cci-")
        # named on the command line (here in a workspace without the config): the user's own ask stays an error
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        named = run_cci("--port", f"{port}:{INSIDE}", "run", "--", "true", env=env, cwd=elsewhere)
        assert_error(named, 4, f"127.0.0.1:{port} is in use on the host (published by {holder})")
        assert in_workspace(incus, elsewhere.resolve()) == []
        # the stopped container that kept the port: publishing it again before its start finds the holder
        with pytest.raises(BackendError) as caught:
            driver.get(launched).publish_port(PublishedPort("127.0.0.1", port, INSIDE))
        assert caught.value.message == f"127.0.0.1:{port} is in use on the host (published by {holder})"
        wait_answer(port, token)  # the first session's all along
    assert in_workspace_names(workspace) == []


def test_bad_port_specs_are_one_line_each_naming_where_they_came_from(
        cci_environ: dict[str, str], driver: IncusDriver, incus: pylxd.Client, workspace: Path) -> None:
    result = run_cci("--port", "localhost:8080:80", "run", "--", "true", env=cci_environ, cwd=workspace)
    assert_error(result, 2, "--port: ports.publish: 'localhost:8080:80': 'localhost' is not an IP address")
    result = run_cci("--port", "8080:80", "--port", "8080:81", "run", "--", "true", env=cci_environ, cwd=workspace)
    assert_error(result, 2, "host port 8080 is published twice")
    write_trusted(workspace, '[ports]\npublish = ["8080:80", "[::1]8081:80"]\n')
    result = run_cci("run", "--", "true", env=cci_environ, cwd=workspace)
    assert_error(result, 2, ".cci.toml:2: ports.publish: '[::1]8081:80' is not [ADDRESS:]HOST:CONTAINER")
    assert in_workspace(incus, workspace.resolve()) == []


def test_the_sandbox_brief_lists_the_ports_and_follows_cci_port_add_and_remove(
        tmp_path: Path, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str]) -> None:
    from tests.integration.test_sandbox_brief import BRIEF, assert_brief, shell
    from tests.stand_in import stand_in_workspace

    configured, added = free_port(), free_port()
    workspace = stand_in_workspace(tmp_path / "project", f'[ports]\npublish = ["{configured}:3000"]\n')
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, cci_environ)
    terminal.wait_for("one", "started ")
    assert_brief(driver, name, BRIEF, f"- container port 3000: the user opens http://127.0.0.1:{configured}")
    assert run_cci("port", "add", name, f"{added}:5173", env=cci_environ).returncode == 0
    assert_brief(driver, name, BRIEF, f"- container port 3000: the user opens http://127.0.0.1:{configured}",
                 f"- container port 5173: the user opens http://127.0.0.1:{added}")
    assert run_cci("port", "remove", name, str(configured), env=cci_environ).returncode == 0
    text = assert_brief(driver, name, BRIEF, f"- container port 5173: the user opens http://127.0.0.1:{added}")
    assert f"127.0.0.1:{configured}" not in text
    assert run_cci("kill", name, env=cci_environ).returncode == 0
    terminal.wait_for("one", "CCI-EXITED-", timeout=120)
