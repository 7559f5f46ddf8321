"""``cci container ...`` on the real Incus, through the installed ``cci`` executable."""

from __future__ import annotations

import json
import select
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import (CCI, RESTRICTED_NETWORK, assert_error, labels_on, nic_network, run_cci,
                                        status_of, unique_name)

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus


def container(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cci("container", *args, env=env)


def assert_silent(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (code, "", "")


def test_launch_labels_starts_and_boots_and_refuses_a_taken_name(launched: str, driver: IncusDriver,
                                                                 incus: pylxd.Client,
                                                                 cci_environ: dict[str, str]) -> None:
    assert status_of(incus, launched) == "running"
    assert labels_on(incus, launched) == {"kind": "container", "network": "restricted"}
    assert nic_network(incus, launched) == RESTRICTED_NETWORK  # the configured policy, as for sessions
    assert incus.instances.get(launched).ephemeral is False
    booted = driver.get(launched).exec(["systemctl", "is-system-running"])
    assert booted.stdout.strip() in {"running", "degraded"}

    result = container("launch", incus_env.IMAGE, launched, env=cci_environ)
    assert_error(result, 4, f"container {launched} already exists", f"cci container delete --force {launched}")


def test_failed_launches_leave_nothing(driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str]) -> None:
    name = unique_name()
    assert_error(container("launch", "no-such-image-x", name, env=cci_environ), 5, "image 'no-such-image-x' not found")
    bad_names = ["bad_name", "with space", "x" * 64]
    for bad in bad_names:
        assert_error(container("launch", incus_env.IMAGE, bad, env=cci_environ), 2,
                     f"invalid container name {bad!r}", "1 to 63 letters, digits and hyphens")
    assert_error(run_cci("--network", "no-such-mode", "container", "launch", incus_env.IMAGE, name, env=cci_environ),
                 3, "network policy 'no-such-mode' is not available")
    assert not {name, *bad_names} & {instance.name for instance in incus.instances.all()}


def test_launch_with_open_network_keeps_the_profile_network(driver: IncusDriver, incus: pylxd.Client,
                                                            cci_environ: dict[str, str]) -> None:
    name = unique_name()
    result = run_cci("--network", "open", "container", "launch", incus_env.IMAGE, name, env=cci_environ)
    assert result.returncode == 0, result.stderr
    assert labels_on(incus, name)["network"] == "open"
    assert nic_network(incus, name) == incus_env.BRIDGE


def test_stop_start_delete_lifecycle(launched: str, incus: pylxd.Client, cci_environ: dict[str, str]) -> None:
    name = launched
    assert_error(container("delete", name, env=cci_environ), 2, f"container {name} is running", "--force")
    assert incus.instances.exists(name)

    result = container("stop", name, "--timeout", "30", env=cci_environ)  # a clean shutdown
    assert (result.returncode, result.stdout) == (0, f"{name}: stopped\n"), result.stderr
    assert status_of(incus, name) == "stopped"
    assert_silent(container("running", name, env=cci_environ), 1)
    assert_silent(container("exists", name, env=cci_environ), 0)
    assert_error(container("exec", name, "--", "true", env=cci_environ), 2, "is not running",
                 f"cci container start {name}")
    assert container("stop", name, env=cci_environ).stdout == f"{name}: already stopped\n"

    result = container("start", name, env=cci_environ)
    assert (result.returncode, result.stdout) == (0, f"{name}: started\n"), result.stderr
    assert_silent(container("running", name, env=cci_environ), 0)
    assert container("start", name, env=cci_environ).stdout == f"{name}: already running\n"

    assert container("stop", name, "--force", env=cci_environ).stdout == f"{name}: stopped\n"
    result = container("delete", name, env=cci_environ)
    assert (result.returncode, result.stdout) == (0, f"{name}: deleted\n"), result.stderr
    assert_silent(container("exists", name, env=cci_environ), 1)
    assert not incus.instances.exists(name)


def test_stop_timeout_fails_without_forcing(launched: str, cci_environ: dict[str, str]) -> None:
    slow = ["systemd-run", "--unit", "slow", "-p", "KillSignal=SIGCONT", "-p", "TimeoutStopSec=30", "sleep", "inf"]
    assert container("exec", launched, "--", *slow, env=cci_environ).returncode == 0  # delays shutdown by 30 s
    assert_error(container("stop", launched, "--timeout", "1", env=cci_environ), 4, f"stopping {launched}",
                 "use --force")
    assert_silent(container("running", launched, env=cci_environ), 0)
    assert container("stop", launched, "--force", env=cci_environ).stdout == f"{launched}: stopped\n"
    assert_silent(container("running", launched, env=cci_environ), 1)


@pytest.mark.parametrize("ephemeral", [False, True])
def test_delete_force_stops_a_running_container_first(ephemeral: bool, driver: IncusDriver, incus: pylxd.Client,
                                                      cci_environ: dict[str, str]) -> None:
    name = unique_name()
    flags = ["--ephemeral"] if ephemeral else []
    assert container("launch", incus_env.IMAGE, name, *flags, env=cci_environ).returncode == 0
    result = container("delete", name, "--force", env=cci_environ)
    assert (result.returncode, result.stdout) == (0, f"{name}: deleted\n"), result.stderr
    assert not incus.instances.exists(name)


def test_ephemeral_container_is_gone_once_stopped(driver: IncusDriver, incus: pylxd.Client,
                                                  cci_environ: dict[str, str]) -> None:
    name = unique_name()
    result = container("launch", incus_env.IMAGE, name, "--ephemeral", env=cci_environ)
    assert (result.returncode, result.stdout) == (0, f"{name}: launched\n"), result.stderr
    assert incus.instances.get(name).ephemeral is True
    assert container("stop", name, "--force", env=cci_environ).returncode == 0
    assert_silent(container("exists", name, env=cci_environ), 1)
    assert not incus.instances.exists(name)


def test_unknown_container_is_not_found(driver: IncusDriver, cci_environ: dict[str, str], tmp_path: Path) -> None:
    name = unique_name()
    for args in (["start", name], ["stop", name], ["delete", name], ["exec", name, "--", "true"],
                 ["mount", name, "dev", str(tmp_path), "/mnt"]):
        assert_error(container(*args, env=cci_environ), 5, f"no container named '{name}'")
    assert_silent(container("exists", name, env=cci_environ), 1)
    assert_silent(container("running", name, env=cci_environ), 1)


def test_exists_and_running_report_backend_failures(cci_environ: dict[str, str], tmp_path: Path) -> None:
    broken = {**cci_environ, "CCI_INCUS_SOCKET": str(tmp_path / "no.socket")}
    for command in ("exists", "running"):
        assert_error(container(command, "anything", env=broken), 4, "Incus is not running")


def test_exec_streams_output_as_it_arrives_and_returns_the_exit_code(launched: str, driver: IncusDriver,
                                                                     cci_environ: dict[str, str]) -> None:
    script = "echo first; until [ -e /tmp/go ]; do sleep 0.05; done; echo second >&2; exit 9"
    process = subprocess.Popen([str(CCI), "container", "exec", launched, "--", "sh", "-c", script],
                               env=cci_environ, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "no output while the command was still running"
        assert process.stdout.readline() == b"first\n"
        assert process.poll() is None  # the command is still waiting for /tmp/go
        driver.get(launched).push_file("/tmp/go", b"")
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 9
    assert (stdout, stderr.decode()) == (b"", "second\n")


def test_exec_passes_only_the_given_environment_user_and_cwd(launched: str, cci_environ: dict[str, str]) -> None:
    env = {**cci_environ, "SECRET_TOKEN": "host-secret"}
    result = run_cci("container", "exec", launched, "--env", "FOO=bar", "--env", "EMPTY=", "--user", "1000",
                     "--cwd", "/tmp", "--", "sh", "-c", "env; id -u; id -g; pwd", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "FOO=bar" in lines and "EMPTY=" in lines
    assert "SECRET_TOKEN" not in result.stdout and "host-secret" not in result.stdout
    assert cci_environ["HOME"] not in result.stdout
    assert lines[-3:] == ["1000", "1000", "/tmp"]

    ids = "id -u; id -g"
    assert container("exec", launched, "--user", "1000", "--group", "0", "--", "sh", "-c", ids,
                     env=cci_environ).stdout == "1000\n0\n"
    assert container("exec", launched, "--", "sh", "-c", ids, env=cci_environ).stdout == "0\n0\n"


def test_exec_capture_json_and_raw_and_bad_options(launched: str, cci_environ: dict[str, str]) -> None:
    result = container("exec", launched, "--capture", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                       env=cci_environ)
    assert result.returncode == 3
    assert json.loads(result.stdout) == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n"}
    assert result.stderr == ""
    result = container("exec", launched, "--capture", "--format", "json", "--", "echo", "hello", env=cci_environ)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"exit_code": 0, "stdout": "hello\n", "stderr": ""}

    raw = subprocess.run([str(CCI), "container", "exec", launched, "--capture", "--format=raw", "--", "sh", "-c",
                          r"printf '\377\000raw'; echo err >&2; exit 4"],
                         env=cci_environ, cwd="/", capture_output=True, check=False, timeout=60)
    assert raw.returncode == 4
    assert raw.stdout == b"\xff\x00raw"
    assert raw.stderr.decode() == "err\n"

    assert_error(container("exec", launched, "--format", "raw", "--", "true", env=cci_environ), 2,
                 "--format only applies with --capture")
    assert_error(container("exec", launched, "--cwd", "tmp", "--", "true", env=cci_environ), 2, "--cwd", "absolute")
    result = container("exec", launched, "--env", "1X=2", "--", "true", env=cci_environ)
    assert result.returncode == 2
    assert "'1X=2' is not KEY=VALUE" in result.stderr and "Traceback" not in result.stderr
    result = container("exec", launched, env=cci_environ)
    assert result.returncode == 2 and "Missing argument" in result.stderr


def test_mount_shifted_and_readonly_host_directories(launched: str, cci_environ: dict[str, str],
                                                     tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    host.chmod(0o777)
    link = tmp_path / "link"
    link.symlink_to(host)
    result = container("mount", launched, "work", str(link), "/mnt/work", "--shift", env=cci_environ)
    assert (result.returncode, result.stdout) == (0, f"{launched}: mounted {host} at /mnt/work\n"), result.stderr

    write = "echo from-inside > /mnt/work/made-inside"
    result = container("exec", launched, "--user", "1000", "--", "sh", "-c", write, env=cci_environ)
    assert result.returncode == 0, result.stderr
    made = host / "made-inside"
    assert made.read_text() == "from-inside\n"
    assert made.stat().st_uid == 1000  # shifted: container uid 1000 is host uid 1000

    result = container("mount", launched, "ro", str(host), "/mnt/ro", "--readonly", env=cci_environ)
    assert result.returncode == 0, result.stderr
    result = container("exec", launched, "--", "sh", "-c", "cat /mnt/ro/made-inside; touch /mnt/ro/new",
                       env=cci_environ)
    assert result.returncode != 0
    assert result.stdout == "from-inside\n"
    assert "Read-only file system" in result.stderr
    assert not (host / "new").exists()

    assert_error(container("mount", launched, "x", str(tmp_path / "missing"), "/mnt/x", env=cci_environ), 5,
                 f"{tmp_path / 'missing'} does not exist")
    assert_error(container("mount", launched, "x", str(made), "/mnt/x", env=cci_environ), 2, "is not a directory")
    assert_error(container("mount", launched, "x", str(host), "mnt/x", env=cci_environ), 2, "absolute", "'mnt/x'")
