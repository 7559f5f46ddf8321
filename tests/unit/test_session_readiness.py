"""The readiness check that cci run, cci shell and cci attach share: the guest script, run here against a fake
root (its /proc, /sys and /run), a fake systemctl and a fake ip(8); and how each kind of launch uses it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cci_core import session_readiness as readiness
from cci_core.errors import BackendError
from cci_core.session import LaunchRequest
from cci_core.session_readiness import NotReadyError, Readiness
from tests.unit.test_saved_sessions import manager

DEFAULT_ROUTE = "eth0\t00000000\t0101D60A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
LINK_ROUTE = "eth0\t0001D60A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
HEADER = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"


class Guest:
    """A fake guest: ``root`` holds its /proc, /sys and /run; ``bin`` its commands (only those the check needs,
    so that a missing ip(8) is really missing); ``calls`` what systemctl and ip were asked."""

    def __init__(self, tmp_path: Path, *, systemd: bool = True, nics: tuple[str, ...] = ("eth0",),
                 routes: str = "", ip: bool = True) -> None:
        self.root, self.bin, self.calls = tmp_path / "root", tmp_path / "bin", tmp_path / "calls"
        for directory in (self.root / "proc/net", self.root / "proc/1", self.root / "run", self.bin):
            directory.mkdir(parents=True, exist_ok=True)
        for tool in ("sh", "date", "sleep", "readlink", "grep"):
            os.symlink(subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True,
                                      check=True).stdout.strip(), self.bin / tool)
        for nic in ("lo", *nics):
            (self.root / "sys/class/net" / nic).mkdir(parents=True)
            (self.root / "sys/class/net" / nic / "ifindex").write_text("1\n")
        (self.root / "sys/class/net/bonding_masters").write_text("\n")  # a file there, not an interface
        (self.root / "proc/net/route").write_text(HEADER + routes)
        if systemd:
            (self.root / "run/systemd/system").mkdir(parents=True)
            self.systemd_socket = socket.socket(socket.AF_UNIX)
            self.systemd_socket.bind(str(self.root / "run/systemd/private"))
        os.symlink("/usr/lib/systemd/systemd" if systemd else "/bin/busybox", self.root / "proc/1/exe")
        self.systemctl(basic_after=1, state="running")
        if ip:
            self.ip(address_after=1)
        self.calls.touch()

    def systemctl(self, *, basic_after: int | None, state: str) -> None:
        """basic.target turns active at its Nth query (None: never); the system's state is ``state``."""
        self._command("systemctl", f"""
if [ "$1" = is-active ]; then
    n=$(grep -c "^systemctl is-active" {self.calls})
    [ {basic_after or 0} -gt 0 ] && [ "$n" -ge {basic_after or 0} ]
    exit $?
fi
echo {state}""")

    def ip(self, *, address_after: int | None) -> None:
        """``ip -4 addr show dev eth0`` shows an address from its Nth call on (None: never); other devices none."""
        self._command("ip", f"""
n=$(grep -c "^ip " {self.calls})
case "$*" in *"dev eth0 "*) [ {address_after or 0} -gt 0 ] && [ "$n" -ge {address_after or 0} ] && \
    echo "2: eth0    inet 10.214.1.2/24 brd 10.214.1.255 scope global dynamic eth0";; esac
exit 0""")

    def _command(self, name: str, body: str) -> None:
        (self.bin / name).write_text(f"#!{self.bin}/sh\necho \"{name} $*\" >> {self.calls}\n{body}\n")
        (self.bin / name).chmod(0o755)

    def check(self, timeout: int = 5) -> tuple[int, str, list[str]]:
        """Run the check; its exit code, its last line, the calls made."""
        result = subprocess.run([str(self.bin / "sh"), "-c", readiness.READY_CHECK, "sh", str(timeout),
                                 str(self.root)], env={"PATH": str(self.bin)}, capture_output=True, text=True,
                                timeout=timeout + 10, check=False)
        assert result.stderr == ""
        return result.returncode, result.stdout.strip(), self.calls.read_text().splitlines()


def test_a_booted_container_with_its_address_and_default_route_is_ready_at_once(tmp_path: Path) -> None:
    code, said, calls = Guest(tmp_path, routes=DEFAULT_ROUTE).check()
    assert (code, said) == (0, "")
    assert calls == ["systemctl is-active --quiet basic.target", "ip -4 -o addr show dev eth0 scope global"]


def test_the_check_waits_for_basic_target_while_the_boot_goes_on(tmp_path: Path) -> None:
    guest = Guest(tmp_path, routes=DEFAULT_ROUTE)
    guest.systemctl(basic_after=3, state="starting")
    code, _, calls = guest.check()
    assert code == 0
    assert calls.count("systemctl is-active --quiet basic.target") == 3
    assert calls.count("systemctl is-system-running") == 2
    assert not any("--wait" in call for call in calls)


def test_a_boot_over_without_basic_target_is_not_waited_for(tmp_path: Path) -> None:
    guest = Guest(tmp_path, routes=DEFAULT_ROUTE)
    guest.systemctl(basic_after=None, state="degraded")
    code, _, calls = guest.check()
    assert code == 0 and calls.count("systemctl is-active --quiet basic.target") == 1


def test_the_check_waits_for_the_address_on_the_default_routes_interface(tmp_path: Path) -> None:
    guest = Guest(tmp_path, routes=DEFAULT_ROUTE)
    guest.ip(address_after=4)
    started = time.monotonic()
    code, _, calls = guest.check()
    assert code == 0 and calls.count("ip -4 -o addr show dev eth0 scope global") == 4
    assert time.monotonic() - started < 3  # polled, not slept in whole seconds


@pytest.mark.parametrize(("routes", "address", "said"), [
    ("", None, "the network: no IPv4 address on eth0 (no DHCP lease yet?)"),
    (DEFAULT_ROUTE, None, "the network: eth0 has a default route but no IPv4 address"),
    ("", 1, "the network: no default route (interfaces: eth0)"),
])
def test_a_network_that_never_comes_up_ends_the_check_at_its_deadline_saying_what_is_missing(
        tmp_path: Path, routes: str, address: int | None, said: str) -> None:
    guest = Guest(tmp_path, routes=routes)
    guest.ip(address_after=address)
    started = time.monotonic()
    code, last, _ = guest.check(timeout=1)
    assert (code, last) == (3, said)
    assert 0.9 < time.monotonic() - started < 4


def test_a_boot_that_never_reaches_basic_target_is_named(tmp_path: Path) -> None:
    guest = Guest(tmp_path, routes=DEFAULT_ROUTE)
    guest.systemctl(basic_after=None, state="starting")
    assert guest.check(timeout=1)[:2] == (3, "systemd's basic.target (still booting)")


def test_a_container_without_a_network_interface_has_no_network_to_wait_for(tmp_path: Path) -> None:
    code, _, calls = Guest(tmp_path, nics=()).check(timeout=1)
    assert code == 0 and not any(call.startswith("ip ") for call in calls)


def test_without_ip_the_kernels_route_for_the_address_counts(tmp_path: Path) -> None:
    assert Guest(tmp_path, routes=DEFAULT_ROUTE + LINK_ROUTE, ip=False).check()[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    assert Guest(other, routes=DEFAULT_ROUTE, ip=False).check(timeout=1)[:2] == (
        3, "the network: eth0 has a default route but no IPv4 address")


def test_an_image_without_systemd_waits_for_the_network_only(tmp_path: Path) -> None:
    code, _, calls = Guest(tmp_path, systemd=False, routes=DEFAULT_ROUTE).check()
    assert code == 0 and not any(call.startswith("systemctl") for call in calls)


# -- how launches use it ------------------------------------------------------------------------------------


def readiness_of(monkeypatch: pytest.MonkeyPatch, missing: str | None) -> list[tuple[str, int]]:
    """Make the launch's check say ``missing``; the (container, timeout) it was asked for."""
    from cci_core import session as lifecycle

    asked: list[tuple[str, int]] = []

    def check(container: object, timeout: int) -> str | None:
        asked.append((container.name, timeout))  # type: ignore[attr-defined]
        return missing

    monkeypatch.setattr(lifecycle, "check_ready", check)
    return asked


def test_a_launch_runs_the_check_in_the_container(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    container, _ = manager(tmp_path).launch(LaunchRequest(workspace))
    checks = [argv for argv in container.commands if argv[:3] == ("sh", "-c", readiness.READY_CHECK)]  # type: ignore[attr-defined]
    assert checks == [("sh", "-c", readiness.READY_CHECK, "sh", "60")]


def test_a_run_that_is_not_ready_fails_with_one_line_and_leaves_nothing(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    asked = readiness_of(monkeypatch, "the network: no IPv4 address on eth0 (no DHCP lease yet?)")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    sessions = manager(tmp_path)
    with pytest.raises(NotReadyError) as raised:
        sessions.run(LaunchRequest(workspace), ["true"])
    assert raised.value.exit_code == 4
    assert str(raised.value).startswith(f"{asked[0][0]} was not ready after 60 s: the network: no IPv4 address on "
                                        "eth0 (no DHCP lease yet?)")
    assert sessions.driver.containers == {}  # type: ignore[attr-defined]


def test_a_run_without_waiting_runs_no_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = readiness_of(monkeypatch, "anything")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    assert manager(tmp_path).run(LaunchRequest(workspace, readiness=Readiness.SKIPPED), ["true"]) == 0
    assert asked == []


def test_a_session_that_is_not_ready_warns_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readiness_of(monkeypatch, "systemd's basic.target (still booting)")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    sessions = manager(tmp_path)
    warnings: list[str] = []
    sessions.warn = warnings.append
    container, _ = sessions.launch(LaunchRequest(workspace))
    assert container.status() == "running"
    assert warnings == [f"{container.name} was not ready after 60 s: systemd's basic.target (still booting); "
                        "going on without it"]


def test_the_timeout_is_the_configured_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.config import Override, load_config

    asked = readiness_of(monkeypatch, None)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    sessions = manager(tmp_path)
    sessions.config = load_config(tmp_path, environ={"CCI_READINESS_TIMEOUT": "7"}, overrides=[
        Override("defaults.driver", "fake", "test"), Override("tool.name", "demo", "test")])
    sessions.run(LaunchRequest(workspace), ["true"])
    assert [timeout for _, timeout in asked] == [7]


def test_the_check_runs_while_the_credentials_go_in_and_post_launch_comes_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """They write only under the user's home, which the boot does not touch: done while the wait goes on (on a
    thread of its own), they cost no time; post_launch comes once the wait is over."""
    import threading

    from cci_core import hookimpl
    from cci_core import session as lifecycle

    injected = threading.Event()
    seen: list[str] = []

    def check(container: object, timeout: int) -> None:
        seen.append("wait begins")
        seen.append("credentials during the wait" if injected.wait(10) else "credentials not during the wait")
        seen.append("wait over")

    class Order:
        @hookimpl
        def cci_inject_credentials(self, ctx, container):  # type: ignore[no-untyped-def]
            injected.set()

        @hookimpl
        def cci_post_launch(self, ctx, container):  # type: ignore[no-untyped-def]
            seen.append("post_launch")

    monkeypatch.setattr(lifecycle, "check_ready", check)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    manager(tmp_path, Order()).launch(LaunchRequest(workspace))
    assert seen == ["wait begins", "credentials during the wait", "wait over", "post_launch"]


def test_a_container_that_stops_during_the_check_fails_the_launch_after_the_credentials_went_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core import session as lifecycle

    def check(container: object, timeout: int) -> None:
        raise BackendError("running sh in cci-x: the container stopped")

    monkeypatch.setattr(lifecycle, "check_ready", check)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    sessions = manager(tmp_path)
    with pytest.raises(BackendError, match="the container stopped"):
        sessions.launch(LaunchRequest(workspace))
    assert sessions.driver.containers == {}  # type: ignore[attr-defined]  (nothing half-made is left)


def test_cci_shell_starts_tmux_in_a_container_it_just_launched_without_asking_whether_one_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container made a moment ago has no tmux session: asking would be one more request before the tool starts,
    and so would starting it in an exec of its own: the attach starts it."""
    from click.testing import CliRunner

    from cci_core.cli import shell_cmds
    from cci_core.cli.main import cli
    from cci_core.tmux import SESSION

    sessions = manager(tmp_path)
    monkeypatch.setattr(shell_cmds, "manager_for", lambda ctx: sessions)
    monkeypatch.setattr(shell_cmds, "_require_terminal", lambda command: None)
    monkeypatch.setattr(shell_cmds, "check_network_policy", lambda ctx: None)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    result = CliRunner().invoke(cli, ["--workspace", str(workspace), "shell"], env={"CCI_NETWORK_MODE": "open"})
    assert result.exit_code == 0, result.output
    [container] = sessions.driver.containers.values()  # type: ignore[attr-defined]
    tmux = [argv for argv in container.commands if argv[:1] == ("tmux",)]
    assert tmux[0][:5] == ("tmux", "new-session", "-A", "-s", SESSION)  # the attach, which starts the session
    assert "demo" in tmux[0][-1]  # the tool, in bash
    assert [argv[1] for argv in tmux[1:]] == ["has-session"]  # after the attach: detached, or ended?
