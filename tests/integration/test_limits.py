"""``[limits]`` on a real Incus: visible and enforced inside, from the config, a profile and ``--limit``; the session
duration ending a session (attached, unwatched, with its timer inside cancelled) with a save; bounded saves; bad
input. The stand-in tool (see test_resume) runs the sessions."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.naming import container_name
from cci_builtin_plugins.incus.driver import IncusDriver
from tests.integration.conftest import (
    CCI,
    assert_error,
    in_workspace,
    labels_on,
    run_cci,
    status_of,
    wait_stopped,
    wait_until_gone,
)
from tests.integration.terminal import Terminal
from tests.integration.test_resume import in_container, saved_sessions, session_of, shell, workspace  # noqa: F401
from tests.workspace_config import write_trusted

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

#: waits until the container has booted (a 'cci run' does not wait for the boot), at most 60 s: a command that takes
#: every process the limit allows while systemd still starts units leaves it without a bus (seen), and once stopped
#: it altogether (in CI). Early on, systemctl cannot reach systemd at all (no bus): asked again then
BOOTED = ("n=0; until s=$(timeout 60 systemctl is-system-running --wait 2>/dev/null); [ \"$s\" = running ] || "
          "[ \"$s\" = degraded ]; do n=$((n+1)); [ $n -gt 300 ] && exit 9; sleep 0.2; done; ")
STATE = "/home/code/.stand-in"


def lines_of(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``key=value`` lines of a command's output."""
    assert result.returncode == 0, (result.stdout, result.stderr)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_limits_are_visible_and_enforced_inside(driver: IncusDriver, incus: pylxd.Client, tmp_path: Path,
                                                cci_environ: dict[str, str]) -> None:
    # a bounded process test: one shell starts sleeps until fork fails (dash gives up at once), never a fork bomb
    script = BOOTED + (
        "echo pids=$(cat /sys/fs/cgroup/pids/pids.max); echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes);"
        " echo cpus=$(nproc);"
        " (i=0; while :; do sleep 600 & i=$((i+1)); echo $i > /tmp/started; done) 2>/tmp/fork-error;"
        " echo started=$(cat /tmp/started); echo peak=$(cat /sys/fs/cgroup/pids/pids.current);"
        " echo fork=\"$(cat /tmp/fork-error)\"; kill $(pgrep -u code sleep) 2>/dev/null;"
        " fallocate -l 6G /tmp/over 2>/dev/null; echo over=$?; fallocate -l 1G /tmp/under; echo under=$?")
    result = run_cci("--workspace", str(tmp_path), "--limit", "processes=50", "--limit", "memory=512MiB",
                     "--limit", "cpu=1", "--limit", "disk=5GiB", "run", "--", "sh", "-c", script, env=cci_environ)
    seen = lines_of(result)
    assert (seen["pids"], seen["memory"], seen["cpus"]) == ("50", str(512 << 20), "1")
    assert 0 < int(seen["started"]) < 50 and "Cannot fork" in seen["fork"]  # it hit the limit, and stopped there
    assert (seen["over"], seen["under"]) == ("1", "0")  # the root disk holds 5 GiB, not more
    assert in_workspace(incus, tmp_path) == []


def test_a_profile_and_the_flag_reach_the_container_and_the_flag_wins(
    driver: IncusDriver, tmp_path: Path, cci_environ: dict[str, str],
) -> None:
    write_trusted(tmp_path, '[limits]\nprocesses = 300\n[profiles.small.limits]\nprocesses = 77\ncpu = "1"\n'
                            'memory = "256MiB"\n')
    script = BOOTED + ("echo pids=$(cat /sys/fs/cgroup/pids/pids.max); echo cpus=$(nproc); "
                        "echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)")
    plain = lines_of(run_cci("--workspace", str(tmp_path), "run", "--", "sh", "-c", script, env=cci_environ))
    assert plain["pids"] == "300"
    seen = lines_of(run_cci("--workspace", str(tmp_path), "--profile", "small", "--limit", "memory=300MiB", "run",
                            "--", "sh", "-c", script, env=cci_environ))
    assert (seen["pids"], seen["cpus"], seen["memory"]) == ("77", "1", str(300 << 20))


def test_the_duration_ends_an_attached_session_with_a_save(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
) -> None:
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, cci_environ, "--limit", "duration=15s", "--limit", "cpu=1")
    terminal.wait_for("one", "started ")
    session = session_of(incus, name)
    listed = run_cci("list", "--format", "json", env=cci_environ)
    row = next(row for row in json.loads(listed.stdout)["containers"] if row["name"] == name)
    assert row["limits"] == {"cpu": "1", "memory": "50%", "processes": 10000, "disk": "20GiB", "duration": "15s",
                             "save_size": "2GiB"}
    assert row["deadline"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(labels_on(incus, name)["deadline"])))
    terminal.keys("one", "typed-before-the-limit", "Enter")
    terminal.wait_for("one", "noted: typed-before-the-limit")
    screen = terminal.wait_for("one", "CCI-EXITED-0", timeout=90)
    assert f"{name} reached its time limit ([limits] duration = '15s'): session ended: saved and deleted in the " \
           "background" in " ".join(screen.split())
    wait_until_gone(incus, name)
    assert session in [entry["id"] for entry in saved_sessions(cci_environ)]


def unwatched(terminal: Terminal, workspace: Path, env: dict[str, str], incus: pylxd.Client,
              *flags: str) -> tuple[str, str]:
    """A stand-in session of 15 s whose cci was killed (nobody watches it): its container and session id."""
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, env, "--limit", "duration=15s", *flags)
    terminal.wait_for("one", "started ")
    session = session_of(incus, name)
    terminal.kill_command("one")  # kill -9 of cci: the container runs on
    terminal.wait_for("one", "CCI-EXITED-137")
    return name, session


def test_an_unwatched_session_powers_itself_off_at_its_deadline_and_the_next_command_saves_it(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
) -> None:
    name, session = unwatched(terminal, workspace, cci_environ, incus)
    assert wait_stopped(incus, name, 60)  # the timer inside powered it off
    result = run_cci("list", env=cci_environ)
    assert result.returncode == 0, result.stderr
    assert name not in [container.name for container in incus.instances.all()]
    assert session in [entry["id"] for entry in saved_sessions(cci_environ)]


def test_a_session_past_its_deadline_whose_timer_the_agent_cancelled_is_ended_by_any_cci_command(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
) -> None:
    name, session = unwatched(terminal, workspace, cci_environ, incus, "--persistent")
    in_container(name, "systemctl stop cci-deadline.timer", cci_environ)  # the agent is root inside
    deadline = int(labels_on(incus, name)["deadline"])
    while time.time() < deadline + 1:  # the deadline is a time: nothing else to wait on
        assert status_of(incus, name) == "running"  # (nothing inside stops it any more)
        time.sleep(0.5)
    result = run_cci("list", env=cci_environ)
    assert result.returncode == 0, result.stderr
    assert f"{name} reached its time limit ([limits] duration = '15s')" in result.stderr
    assert status_of(incus, name) == "stopped" and labels_on(incus, name)["state"] == "saved"  # persistent: kept
    assert session in [entry["id"] for entry in saved_sessions(cci_environ)]


def bounded_session(terminal: Terminal, workspace: Path, incus: pylxd.Client, env: dict[str, str],
                    save_size: str) -> tuple[str, str]:
    """Start a session under ``--limit save_size=SAVE_SIZE`` in ``terminal``; its container's name and session id."""
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, env, "--limit", f"save_size={save_size}")
    terminal.wait_for("one", "started ")
    return name, session_of(incus, name)


def blocks_written(directory: Path) -> int:
    """The bytes of the blocks the files under ``directory`` hold (du: not the sizes they show)."""
    used = subprocess.run(["du", "-s", "--block-size=1", str(directory)], capture_output=True, text=True, check=True)
    return int(used.stdout.split()[0])


def test_a_save_is_bounded_and_reads_no_big_file_into_memory_nor_writes_it(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path,
) -> None:
    name, session = bounded_session(terminal, workspace, incus, cci_environ, "64MiB")
    in_container(name, f"truncate -s 1G {STATE}/sparse.bin && head -c 100M /dev/urandom > {STATE}/over.bin && "
                       f"echo kept > {STATE}/small.txt", cci_environ)
    timed = subprocess.run(["/usr/bin/time", "-f", "maxrss=%M", str(CCI), "shutdown", name], env=cci_environ,
                           capture_output=True, text=True, timeout=120, check=False)
    assert timed.returncode == 0, timed.stderr
    assert int(timed.stderr.rsplit("maxrss=", 1)[1].split()[0]) < 150 * 1024, timed.stderr  # KiB
    tree = isolated_env / ".cci" / "sessions-stand-in" / session / ".stand-in"
    assert (tree / "small.txt").read_bytes() == b"kept\n"
    assert not (tree / "sparse.bin").exists() and not (tree / "over.bin").exists()
    assert blocks_written(isolated_env / ".cci") < 8 << 20
    assert "2 file(s) over 64 MiB not saved" in timed.stderr


def test_a_save_of_many_empty_entries_stays_within_its_bound_on_the_host(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path,
) -> None:
    # the end's save walks the stopped container over SFTP, where names and directories cost the reader nothing
    name, session = bounded_session(terminal, workspace, incus, cci_environ, "1MiB")
    in_container(name, f"mkdir {STATE}/many && cd {STATE}/many && seq 20000 | xargs mkdir", cci_environ)
    ended = run_cci("shutdown", name, env=cci_environ, timeout=300)
    assert ended.returncode == 0, ended.stderr
    assert blocks_written(isolated_env / ".cci") < 4 << 20, ended.stderr
    assert "the save stopped at its bound (1 MiB, [limits] save_size)" in ended.stderr
    assert session in [entry["id"] for entry in saved_sessions(cci_environ)]


@pytest.mark.parametrize(("flag", "said"), [
    ("memmory=1GiB", "unknown key 'memmory' (did you mean 'memory'?)"),
    ("disk=1GiB", "disk: '1GiB' is too small: give at least 4GiB"),
    ("duration=8 hours", "duration: '8 hours' is not a duration"),
])
def test_a_bad_limit_is_one_line_naming_the_flag_and_nothing_is_made(
    flag: str, said: str, driver: IncusDriver, incus: pylxd.Client, tmp_path: Path, cci_environ: dict[str, str],
) -> None:
    result = run_cci("--workspace", str(tmp_path), "--limit", flag, "run", "--", "true", env=cci_environ)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"Invalid value for '--limit': {said}" in result.stderr
    assert in_workspace(incus, tmp_path) == []


def test_a_limit_incus_refuses_is_one_line_and_the_launch_is_undone(
    driver: IncusDriver, incus: pylxd.Client, tmp_path: Path, cci_environ: dict[str, str],
) -> None:
    write_trusted(tmp_path, "[limits]\nprocesses = 9223372036854775807\n")  # no cgroup takes that
    result = run_cci("--workspace", str(tmp_path), "run", "--", "true", env=cci_environ)
    assert_error(result, 4, "starting cci-", "Incus could not start it under its [limits]")
    assert in_workspace(incus, tmp_path) == []


def test_a_saved_container_started_again_takes_the_limits_of_now_but_its_disk_never_shrinks(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    tmp_path: Path,
) -> None:
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, cci_environ, "--persistent", "--limit", "processes=300", "--limit", "disk=8GiB")
    terminal.wait_for("one", "started ")
    assert in_container(name, "cat /sys/fs/cgroup/pids/pids.max", cci_environ) == "300\n"
    assert run_cci("shutdown", name, env=cci_environ).returncode == 0
    terminal.wait_for("one", "CCI-EXITED-0")
    assert labels_on(incus, name)["state"] == "saved"

    errors = tmp_path / "stderr"  # (tmux takes the screen once the session is there)
    shell(terminal, "two", workspace, cci_environ, "--persistent", "--limit", "processes=400", "--limit", "disk=5GiB",
          f"2>{errors}")
    terminal.wait_for("two", "started ")
    assert in_container(name, "cat /sys/fs/cgroup/pids/pids.max", cci_environ) == "400\n"
    assert incus.instances.get(name).devices["root"]["size"] == str(8 << 30)
    assert (f"cci: warning: {name}: its root disk stays at 8GiB: a disk is never made smaller (disk = '5GiB')"
            in errors.read_text())
