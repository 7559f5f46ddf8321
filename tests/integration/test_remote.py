"""cci against a remote Incus named as the incus CLI knows it (``--remote``, ``[incus] remote``): the test daemon on
loopback HTTPS, its client certificate trusted (scripts/incus-test-env). What does not need the workspace works
through it; a session there gets a copy of the workspace, synced back before 'cci run' returns, a file changed
on both sides kept twice; an untrusted client, a changed server certificate and an unknown remote are one line
each with the fix."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pylxd
import pytest

from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import CCI, assert_error, run_cci, unique_name
from tests.unit.test_incus_remotes import self_signed


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A project directory."""
    root = tmp_path / "project"
    root.mkdir()
    return root


def remote_environ(cci_environ: dict[str, str], conf: Path = incus_env.REMOTE_CONF) -> dict[str, str]:
    """cci's environment with the test remote named, and its project left to the remote's."""
    environ = {key: value for key, value in cci_environ.items() if key != "CCI_INCUS_PROJECT"}
    return {**environ, "INCUS_CONF": str(conf)}


def test_list_and_doctor_go_to_the_remote_with_its_certificate_and_project(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str]
) -> None:
    name = unique_name()
    result = run_cci("container", "launch", incus_env.IMAGE, name, env=cci_environ)  # (made over the local socket)
    assert result.returncode == 0, result.stderr
    try:
        environ = remote_environ(cci_environ)
        found = run_cci("--remote", incus_env.REMOTE, "container", "exists", name, env=environ)
        assert found.returncode == 0, found.stderr  # in the remote's project (cci-test), not [incus] project's
        # an exec: its streams are websockets over the same TLS
        ran = run_cci("--remote", incus_env.REMOTE, "container", "exec", name, "--", "sh", "-c",
                      "cat /etc/hostname; echo oops >&2; exit 3", env=environ)
        assert (ran.returncode, ran.stdout, ran.stderr) == (3, f"{name}\n", "oops\n")
        # and its input, whole: over TCP the input socket is closed only once Incus has answered its close
        data = os.urandom(8 << 20)
        fed = subprocess.run([str(CCI), "--remote", incus_env.REMOTE, "container", "exec", name, "--", "sha256sum"],
                             input=data, env=environ, capture_output=True, timeout=120, check=False)
        assert fed.returncode == 0, fed.stderr
        assert fed.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
        doctor = run_cci("--remote", incus_env.REMOTE, "doctor", env=environ)
        lines = {found[1]: found[2] for line in doctor.stdout.splitlines()
                 if (found := re.match(r"ok\s+(\S.*?)\s{2,}(.*)", line))}
        assert f"remote Incus at https://{incus_env.HTTPS_ADDRESS} (remote '{incus_env.REMOTE}' of the incus CLI)" \
            in lines["incus installed"]
        assert lines["incus reachable"].endswith(f"on https://{incus_env.HTTPS_ADDRESS}")
        assert lines["incus project"].endswith(incus_env.PROJECT)
        # [incus] remote does the same as --remote; 'local' is this host's socket again
        assert run_cci("container", "exists", name, env={**environ, "CCI_INCUS_REMOTE": incus_env.REMOTE}).returncode == 0
        local = run_cci("--remote", "local", "doctor", env={**environ, "CCI_INCUS_REMOTE": incus_env.REMOTE})
        assert "ok    incus installed  socket " in local.stdout
    finally:
        run_cci("container", "delete", "--force", name, env=cci_environ)


def test_a_run_on_a_remote_gets_a_copy_of_the_workspace_and_its_changes_come_back_before_it_returns(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str]
) -> None:
    (workspace / "in.txt").write_text("from the host\n")
    (workspace / "gone.txt").write_text("to be removed inside\n")
    (workspace / "etc").symlink_to("/etc")  # a link out: copied as a link, never followed
    script = ("cat in.txt > out.txt && ! grep -q ' /workspace ' /proc/mounts && test -L etc && "
              "test \"$(stat -c %u in.txt)\" = 1000 && mkdir -p d/e && echo deep > d/e/f && rm gone.txt && "
              "ln -s /etc/shadow leak && ln -s ../in.txt d/up && exit 5")
    result = run_cci("--workspace", str(workspace), "--remote", incus_env.REMOTE, "run", "--", "sh", "-c", script,
                     env=remote_environ(cci_environ))
    assert result.returncode == 5, result.stderr
    assert (workspace / "out.txt").read_text() == "from the host\n"
    assert (workspace / "d/e/f").read_text() == "deep\n" and os.readlink(workspace / "d/up") == "../in.txt"
    assert not (workspace / "gone.txt").exists()
    assert not os.path.lexists(workspace / "leak") and "leak" in result.stderr  # a link out is not made, and said
    assert os.readlink(workspace / "etc") == "/etc"
    assert not [name for name in os.listdir(workspace) if name.startswith(".cci-sync")]


def test_a_file_changed_on_both_sides_keeps_the_hosts_and_puts_the_containers_beside_it(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str]
) -> None:
    (workspace / "shared.txt").write_text("before\n")
    run = subprocess.Popen([str(CCI), "--workspace", str(workspace), "--remote", incus_env.REMOTE, "run", "--", "sh",
                            "-c", "echo container > shared.txt && while [ ! -e /tmp/go ]; do sleep 0.1; done"],
                           env=remote_environ(cci_environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        name = wait_for_copy(incus, workspace, "shared.txt", "container\n")
        devices = incus.instances.get(name).expanded_devices
        assert not [device for device in devices.values() if device.get("type") == "disk"
                    and device.get("source", "").startswith("/")]  # no host path: a copy, not a mount
        (workspace / "shared.txt").write_text("host\n")
        incus.instances.get(name).execute(["touch", "/tmp/go"])
        stdout, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, stderr
    assert (workspace / "shared.txt").read_text() == "host\n"
    [beside] = [path for path in workspace.iterdir() if path.name.startswith("shared.txt.cci-container-")]
    assert beside.read_text() == "container\n"
    assert "shared.txt changed on both sides" in stderr and beside.name in stderr


def test_cci_sync_copies_either_way_while_the_session_runs(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str]
) -> None:
    (workspace / "old.txt").write_text("old\n")
    (workspace / "edited.txt").write_text("first\n")
    environ = remote_environ(cci_environ)
    run = subprocess.Popen([str(CCI), "--workspace", str(workspace), "--remote", incus_env.REMOTE, "run", "--", "sh",
                            "-c", "echo made > made.txt && while [ ! -e /tmp/go ]; do sleep 0.1; done"],
                           env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        name = wait_for_copy(incus, workspace, "made.txt", "made\n")
        back = run_cci("--remote", incus_env.REMOTE, "sync", name, env=environ)
        assert back.returncode == 0, back.stderr
        assert (workspace / "made.txt").read_text() == "made\n" and "1 written" in back.stdout
        # the host changes things; the container one of them too: its change comes back first, nothing is lost
        (workspace / "old.txt").unlink()
        (workspace / "host.txt").write_text("host\n")
        incus.instances.get(name).execute(["sh", "-c", "echo inside > /workspace/edited.txt"])
        into = run_cci("--remote", incus_env.REMOTE, "sync", name, "--to-container", env=environ)
        assert into.returncode == 0, into.stderr
        inside = incus.instances.get(name).execute(["sh", "-c", "cd /workspace && cat host.txt edited.txt; "
                                                                "test -e old.txt && echo old-still-there; true"])
        assert inside.stdout == "host\ninside\n"
        assert (workspace / "edited.txt").read_text() == "inside\n"
        incus.instances.get(name).execute(["touch", "/tmp/go"])
        assert run.wait(120) == 0
    finally:
        run.kill()
        run.communicate()


def wait_for_copy(incus: pylxd.Client, workspace: Path, path: str, content: str, timeout: float = 90) -> str:
    """The session container of ``workspace`` once its copy of ``path`` holds ``content``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for instance in incus.instances.all():
            if instance.config.get("user.cci.workspace") == str(workspace.resolve()) and instance.status == "Running":
                found = instance.execute(["cat", f"/workspace/{path}"])
                if found.exit_code == 0 and found.stdout == content:
                    return str(instance.name)
        time.sleep(0.2)
    raise AssertionError(f"no container of {workspace} got {path} = {content!r}")


def test_storage_and_mounts_are_refused_on_a_remote_before_anything_is_made(
    workspace: Path, tmp_path: Path, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str],
    launched: str
) -> None:
    before = {instance.name for instance in incus.instances.all()}
    storage = tmp_path / "storage"
    storage.mkdir()
    result = run_cci("--workspace", str(workspace), "--remote", incus_env.REMOTE, "--storage", str(storage), "run",
                     "--", "true", env=remote_environ(cci_environ))
    assert_error(result, 2, f"--storage mounts {storage} from this host", "copied in and back")
    result = run_cci("--remote", incus_env.REMOTE, "container", "mount", launched, "mnt", str(workspace),
                     "/mnt", env=remote_environ(cci_environ))
    assert_error(result, 4, f"cannot mount {workspace} from this host")
    assert "mnt" not in {device for device in incus.instances.get(launched).devices}
    assert {instance.name for instance in incus.instances.all()} == before


def test_an_untrusted_client_a_changed_server_and_an_unknown_remote_are_one_line_each(
    tmp_path: Path, driver: IncusDriver, cci_environ: dict[str, str]
) -> None:
    untrusted = tmp_path / "untrusted"
    shutil.copytree(incus_env.REMOTE_CONF, untrusted)
    cert, key = self_signed(tmp_path, "untrusted-client")  # a client the server was never told to trust
    shutil.copy(cert, untrusted / "client.crt")
    shutil.copy(key, untrusted / "client.key")
    result = run_cci("--remote", incus_env.REMOTE, "list", env=remote_environ(cci_environ, untrusted))
    assert_error(result, 4, "listing containers: not authorized", f"does not trust {untrusted / 'client.crt'}",
                 "incus config trust add-certificate")

    changed = tmp_path / "changed"
    shutil.copytree(incus_env.REMOTE_CONF, changed)
    shutil.copy(cert, changed / "servercerts" / f"{incus_env.REMOTE}.crt")
    result = run_cci("--remote", incus_env.REMOTE, "list", env=remote_environ(cci_environ, changed))
    assert_error(result, 4, "offered a certificate other than the one pinned in", "incus remote add")

    result = run_cci("--remote", "nowhere", "list", env=remote_environ(cci_environ))
    assert_error(result, 2, "no Incus remote 'nowhere' in", f"{incus_env.REMOTE}", "incus remote add")
