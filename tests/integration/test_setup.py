"""``cci setup`` against the real Incus: the dry run on this prepared machine changes nothing; a real run for a
fresh user (its own config file, no image, no daemon restart) does its steps once; names taken by something
setup did not make, and a missing sudo, stop it with nothing made."""

from __future__ import annotations

import grp
import ipaddress
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from cci_builtin_plugins.incus.connection import Endpoint
from cci_builtin_plugins.incus.rest import IncusAPI
from cci_builtin_plugins.setup.subnets import parse_proc_route
from tests import incus_env
from tests.integration.conftest import CCI, assert_error, run_cci

pytestmark = pytest.mark.incus

SUBUID, SUBGID = Path("/etc/subuid"), Path("/etc/subgid")
SYSTEM_CONFIG = Path("/etc/cci/config.toml")
#: the steps this prepared machine has done already, whoever runs setup
PREPARED_STEPS = ("[1/10] install Incus: done: ", "[4/10] start Incus: done: incusd runs (pid ",
                  f"[6/10] storage pool: done: the default profile's root disk is on pool {incus_env.POOL} (btrfs)",
                  f"[7/10] default network: done: the default profile has a network device (eth0 on "
                  f"{incus_env.BRIDGE})")


def incus_state(project: str = "default") -> dict[str, Any]:
    """What setup could change: pools, the bridges not made by cci's sessions, and the default profile."""
    api = IncusAPI(Endpoint(socket=incus_env.SOCKET), project)
    return {
        "pools": {pool["name"]: (pool["driver"], pool["config"])
                  for pool in api.get("/1.0/storage-pools", "listing pools", recursion=1)},
        "networks": {network["name"]: network["config"]
                     for network in api.get("/1.0/networks", "listing networks", recursion=1)
                     if network["managed"] and not network["name"].startswith(("cci-", "ccidoctor"))},
        "profile": api.get("/1.0/profiles/default", "reading the profile")["devices"],
    }


def files_state(*paths: Path) -> dict[Path, tuple[bytes, int] | None]:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) if path.exists() else None for path in paths}


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may read and only root may write (tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cci-setup-test-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


@pytest.mark.parametrize("user", [None, incus_env.TEST_USER])
def test_dry_run_on_this_machine_shows_what_is_done_and_changes_nothing(cci_environ: dict[str, str],
                                                                          user: str | None) -> None:
    env = {**cci_environ, "HOME": f"/home/{user}"} if user else cci_environ
    before = incus_state(), files_state(SUBUID, SUBGID, SYSTEM_CONFIG)
    result = run_cci("setup", "--dry-run", env=env, user=user)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    output = lines(result)
    name = user or "root"
    assert output[0].startswith(f"cci setup --dry-run for user {name}: 10 steps, ")
    assert output[0].endswith("; nothing is changed")
    steps = [line for line in output if line.startswith("[")]
    assert len(steps) == 10
    for prefix in PREPARED_STEPS:
        assert any(line.startswith(prefix) for line in steps), (prefix, result.stdout)
    if user:
        assert steps[1] == f"[2/10] add {user} to incus-admin: done: {user} is in incus-admin"
        assert steps[2].startswith("[3/10] delegate uid 1001 and gid 1001 to root: done: ")
        # done, unless /etc/subuid or /etc/subgid changed since incusd started (then the command to run is said)
        assert (steps[4].startswith("[5/10] restart Incus for the delegated ids: done: incusd started after") or
                (steps[4].startswith("[5/10] restart Incus for the delegated ids: manual: ") and
                 "after incusd started" in steps[4] and "'sudo incus admin shutdown && sudo " in steps[4])), steps[4]
    else:
        assert steps[1] == "[2/10] add root to incus-admin: done: root uses Incus without a group"
    # what is left to do is shown as exact commands (through sudo for a user), e.g. the image build
    image = next(index for index, line in enumerate(output) if line.startswith("[9/10] image "))
    if ": to do: " in output[image]:
        assert output[image + 1] == f"      $ {'sudo ' if user else ''}{CCI} build"
    assert (incus_state(), files_state(SUBUID, SUBGID, SYSTEM_CONFIG)) == before


@pytest.fixture
def fresh_user() -> Iterator[str]:
    """A Linux user in no Incus group with no ids delegated; afterwards the user and setup's lines are gone and
    /etc/subuid and /etc/subgid are back as they were (content and times: incusd's restart check reads them)."""
    before = files_state(SUBUID, SUBGID)
    name = f"ccisu{uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false", name], check=True)
    uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True).stdout)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)
        for path in (SUBUID, SUBGID):
            original = before[path]
            lines_before = original[0].decode().splitlines() if original else []
            added = f"root:{uid}:1"
            kept = [line for line in path.read_text().splitlines() if line != added or added in lines_before]
            if original and sorted(kept) == sorted(lines_before):  # userdel may have reordered the lines
                path.write_bytes(original[0])
                os.utime(path, ns=(original[1], original[1]))
            else:  # someone else changed the file meanwhile: only setup's line goes
                path.write_text("".join(f"{line}\n" for line in kept))


def test_a_real_run_for_a_fresh_user_does_each_step_once(cci_environ: dict[str, str], fresh_user: str,
                                                          tmp_path: Path) -> None:
    config = tmp_path / "cci" / "config.toml"
    config.parent.mkdir()
    config.write_text('# my settings\n[defaults]\nimage = "mine"\n')
    args = ("setup", "--user", fresh_user, "--config-file", str(config), "--no-image", "--no-restart")
    incus_before = incus_state()
    assert fresh_user not in grp.getgrnam("incus-admin").gr_mem

    first = run_cci(*args, env=cci_environ)
    # everything is done but the restart of incusd, which setup never does with --no-restart: it says the command
    assert first.returncode == 1, first.stdout + first.stderr
    assert first.stderr.startswith("cci: setup is not complete after ")
    assert "(3 step(s) done now, 6 done already): restart Incus for the delegated ids needs you" in first.stderr
    output = lines(first)
    assert output[0] == f"cci setup for user {fresh_user}: 10 steps, 4 to do"
    assert f"      $ usermod -aG incus-admin {fresh_user}" in output
    assert any(line.startswith("[5/10] restart Incus for the delegated ids: manual: ") and
               f"is not restarted (--no-restart), so setup leaves it alone; restart it yourself, e.g. "
               f"'incus admin shutdown && {CCI} setup'" in line for line in output), first.stdout
    assert output[-1] == (f"note: {fresh_user} gets the group at the next login; until then cci runs itself under "
                          "'sg incus-admin' (other programs: 'newgrp incus-admin')")

    uid = int(subprocess.run(["id", "-u", fresh_user], capture_output=True, text=True, check=True).stdout)
    gid = int(subprocess.run(["id", "-g", fresh_user], capture_output=True, text=True, check=True).stdout)
    assert fresh_user in grp.getgrnam("incus-admin").gr_mem
    assert f"root:{uid}:1" in SUBUID.read_text().splitlines()
    assert f"root:{gid}:1" in SUBGID.read_text().splitlines()
    text = config.read_text()
    assert text.startswith('# my settings\n[defaults]\nimage = "mine"\n\n[incus]\nnetwork_subnets = "')
    recorded = ipaddress.IPv4Network(text.rsplit('"', 2)[1])
    assert recorded.prefixlen == 16 and recorded.is_private
    api = IncusAPI(Endpoint(socket=incus_env.SOCKET))
    used = [*parse_proc_route(Path("/proc/net/route").read_text()),
            *(ipaddress.IPv4Interface(network["config"]["ipv4.address"]).network
              for network in api.get("/1.0/networks", "listing", recursion=1)
              if "/" in (network.get("config") or {}).get("ipv4.address", ""))]
    assert not any(recorded.overlaps(network) for network in used)
    assert incus_state() == incus_before  # nothing in Incus needed doing here

    snapshot = files_state(SUBUID, SUBGID, config), grp.getgrnam("incus-admin").gr_mem
    second = run_cci(*args, env=cci_environ)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "(0 step(s) done now, 9 done already)" in second.stderr
    assert lines(second)[0] == f"cci setup for user {fresh_user}: 10 steps, 1 to do"
    assert not any(line.startswith("      $ ") for line in lines(second))  # no command ran
    assert (files_state(SUBUID, SUBGID, config), grp.getgrnam("incus-admin").gr_mem) == snapshot
    assert incus_state() == incus_before


@pytest.fixture
def own_project() -> Iterator[str]:
    """An Incus project with its own, empty default profile (so setup wants a pool and a bridge for it)."""
    name = f"cci-setup-{uuid4().hex[:6]}"
    subprocess.run(["incus", "project", "create", name, "-c", "features.profiles=true", "-c", "features.images=false",
                    "-c", "features.networks=false", "-c", "features.storage.volumes=false"],
                   check=True, capture_output=True)
    yield name
    subprocess.run(["incus", "project", "delete", name], check=True, capture_output=True)


@pytest.mark.parametrize(("flag", "message"), [
    (("--pool", incus_env.POOL),
     f"storage pool {incus_env.POOL!r} exists and was not made by cci setup, which never changes it (choose another "
     "name with --pool NAME)"),
    (("--pool", "cci-setup-unused", "--bridge", incus_env.BRIDGE),
     f"network {incus_env.BRIDGE!r} exists and was not made by cci setup, which never changes it (choose another "
     "name with --bridge NAME)"),
])
def test_a_name_taken_by_something_else_stops_setup_with_nothing_made(cci_environ: dict[str, str], own_project: str,
                                                                      tmp_path: Path, flag: tuple[str, ...],
                                                                      message: str) -> None:
    config = tmp_path / "config.toml"
    before = incus_state(own_project), incus_state()
    dry = run_cci("setup", "--dry-run", *flag, "--config-file", str(config), "--no-image",
                  env={**cci_environ, "CCI_INCUS_PROJECT": own_project})
    result = run_cci("setup", *flag, "--config-file", str(config), "--no-image", "--no-restart",
                     env={**cci_environ, "CCI_INCUS_PROJECT": own_project})
    for run in (dry, result):
        assert_error(run, 2, message)
    assert (incus_state(own_project), incus_state()) == before
    assert not config.exists()


def test_root_steps_without_sudo_are_printed_as_commands_and_fail(cci_environ: dict[str, str],
                                                                  shared_dir: Path) -> None:
    bin_dir = shared_dir / "bin"  # incus, and no sudo
    bin_dir.mkdir()
    (bin_dir / "incus").symlink_to("/usr/bin/incus")
    config = shared_dir / "etc" / "config.toml"  # ccitest may not write there
    env = {**cci_environ, "HOME": f"/home/{incus_env.TEST_USER}"}
    result = subprocess.run(["runuser", "-u", incus_env.TEST_USER, "--", "/usr/bin/env", f"PATH={bin_dir}", str(CCI),
                             "setup", "--no-image", "--config-file", str(config)],
                            env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == ("cci: 1 step(s) need root (IPv4 range for cci's policy networks) and sudo is not "
                             "installed (run the commands above as root, or as root: "
                             f"env CCI_INCUS_PROJECT={incus_env.PROJECT} {CCI} setup --user {incus_env.TEST_USER} "
                             f"--config-file {config} --image {incus_env.IMAGE} --pool cci --pool-size 20GiB "
                             "--bridge incusbr0 --no-image)\n")
    assert f"      $ mkdir -p {config.parent}" in lines(result)
    assert f"      $ tee {config} >/dev/null <<'EOF'" in lines(result)
    assert not config.parent.exists()


def test_doctor_fails_a_recorded_range_with_no_free_24(cci_environ: dict[str, str]) -> None:
    # the test bridge's own /24 as the whole range: no policy network can be made there
    result = run_cci("doctor", env={**cci_environ, "CCI_INCUS_NETWORK_SUBNETS": incus_env.BRIDGE_SUBNET})
    assert result.returncode == 1
    line = next(line for line in lines(result) if line.startswith("fail  policy subnets"))
    assert (f"no free /24 left in [incus] network_subnets ({incus_env.BRIDGE_SUBNET}, set by env "
            "CCI_INCUS_NETWORK_SUBNETS): no policy network can be made  fix: remove that setting and run 'cci setup' "
            "(it records a free range)") in line


def test_doctor_with_auto_subnets_says_whether_incus_can_pick_and_leaves_no_probe(cci_environ: dict[str, str]) -> None:
    result = run_cci("doctor", env={**cci_environ, "CCI_INCUS_NETWORK_SUBNETS": "auto"})
    line = next(line for line in lines(result) if " policy subnets " in line)
    assert line in (
        "ok    policy subnets   Incus picks them (checked with a bridge made and deleted at once)",
        "fail  policy subnets   [incus] network_subnets is auto, but Incus cannot find a free IPv4 subnet for a new "
        "bridge here: no policy network can be made  fix: run 'cci setup' (it records a free range)")
    api = IncusAPI(Endpoint(socket=incus_env.SOCKET))
    probe = "ccidoctor"
    assert not [network["name"] for network in api.get("/1.0/networks", "listing", recursion=1)
                if network["name"].startswith(probe) and network["description"].startswith("cci doctor")]


def test_the_real_default_image_passes_the_image_check_and_setup_finds_it(cci_environ: dict[str, str]) -> None:
    env = {**cci_environ, "CCI_DEFAULTS_IMAGE": incus_env.CLAUDE_IMAGE}
    doctor = run_cci("doctor", env=env)
    line = next(line for line in lines(doctor) if line.startswith(("ok    image", "warn  image", "fail  image")))
    assert line.startswith(f"ok    image            {incus_env.CLAUDE_IMAGE} (")
    assert " with claude " in line
    dry = run_cci("setup", "--dry-run", env=env)
    assert f"[9/10] image {incus_env.CLAUDE_IMAGE}: done: image {incus_env.CLAUDE_IMAGE} exists" in lines(dry)


def _recording_sudo(shared_dir: Path) -> tuple[Path, Path]:
    """A directory with incus and a sudo that records what it was asked to run (one argument a line), runs
    nothing and exits with 7; and the file it records in."""
    bin_dir = shared_dir / "bin"
    bin_dir.mkdir()
    (bin_dir / "incus").symlink_to("/usr/bin/incus")
    record = shared_dir / "sudo-args"
    record.touch()
    record.chmod(0o666)
    sudo = bin_dir / "sudo"
    sudo.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\nexit 7\n')
    sudo.chmod(0o755)
    return bin_dir, record


def test_root_steps_run_setup_again_through_sudo_once(cci_environ: dict[str, str], shared_dir: Path) -> None:
    bin_dir, record = _recording_sudo(shared_dir)
    config = shared_dir / "etc" / "config.toml"
    env = {**cci_environ, "HOME": f"/home/{incus_env.TEST_USER}"}
    result = subprocess.run(["runuser", "-u", incus_env.TEST_USER, "--", "/usr/bin/env", f"PATH={bin_dir}", str(CCI),
                             "setup", "--no-image", "--config-file", str(config)],
                            env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 7, result.stdout + result.stderr  # sudo's exit status
    assert result.stderr == ("cci setup: running setup again through sudo for what needs root: IPv4 range for "
                             "cci's policy networks\n")
    assert record.read_text().splitlines() == [
        "--", "env", f"CCI_INCUS_PROJECT={incus_env.PROJECT}", str(CCI), "setup", "--user", incus_env.TEST_USER,
        "--config-file", str(config), "--image", incus_env.IMAGE, "--pool", "cci", "--pool-size", "20GiB",
        "--bridge", "incusbr0", "--no-image"]
    # started by sudo but not as root: no second sudo, one clear line
    again = subprocess.run(["runuser", "-u", incus_env.TEST_USER, "--", "/usr/bin/env", f"PATH={bin_dir}",
                            "SUDO_USER=someone", str(CCI), "setup", "--no-image", "--config-file", str(config)],
                           env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False)
    assert_error(again, 1, "1 step(s) need root (IPv4 range for cci's policy networks), and sudo ran cci setup as "
                           "uid 1001")
    assert not config.parent.exists()


def test_setup_through_sudo_keeps_the_users_incus_group(cci_environ: dict[str, str], shared_dir: Path) -> None:
    bin_dir, record = _recording_sudo(shared_dir)
    home = Path(f"/home/{incus_env.TEST_USER}")
    user_config = home / ".config/cci/config.toml"
    made = [directory for directory in (home / ".config", user_config.parent) if not directory.exists()]
    for directory in made:
        directory.mkdir()
    user_config.write_text('[incus]\ngroup = "incus"\n')  # the user's own config: root's run does not read it
    try:
        result = subprocess.run(["runuser", "-u", incus_env.TEST_USER, "--", "/usr/bin/env", f"PATH={bin_dir}",
                                 str(CCI), "setup", "--no-image", "--config-file", str(shared_dir / "config.toml")],
                                env={**cci_environ, "HOME": str(home)}, cwd="/", capture_output=True, text=True,
                                timeout=120, check=False)
    finally:
        user_config.unlink()
        for directory in reversed(made):
            directory.rmdir()
    assert result.returncode == 7, result.stdout + result.stderr
    assert record.read_text().splitlines()[:5] == [
        "--", "env", f"CCI_INCUS_PROJECT={incus_env.PROJECT}", "CCI_INCUS_GROUP=incus", str(CCI)]


def test_an_unknown_user_is_one_clear_line(cci_environ: dict[str, str], tmp_path: Path) -> None:
    result = run_cci("setup", "--dry-run", "--user", "no-such-user-here", "--config-file", str(tmp_path / "c.toml"),
                     env=cci_environ)
    assert_error(result, 2, "no user named 'no-such-user-here' on this machine (give an existing one with --user)")


def test_two_runs_at_once_do_each_step_once(cci_environ: dict[str, str], fresh_user: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    argv = [str(CCI), "setup", "--user", fresh_user, "--config-file", str(config), "--no-image", "--no-restart"]
    runs = [subprocess.Popen(argv, env=cci_environ, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.communicate(timeout=120), run.returncode) for run in runs]
    for (stdout, stderr), code in results:  # each ends waiting only for the manual restart
        assert code == 1 and "restart Incus for the delegated ids needs you" in stderr, (stdout, stderr)
    uid = int(subprocess.run(["id", "-u", fresh_user], capture_output=True, text=True, check=True).stdout)
    gid = int(subprocess.run(["id", "-g", fresh_user], capture_output=True, text=True, check=True).stdout)
    assert SUBUID.read_text().splitlines().count(f"root:{uid}:1") == 1
    assert SUBGID.read_text().splitlines().count(f"root:{gid}:1") == 1
    assert config.read_text().count("network_subnets") == 1
