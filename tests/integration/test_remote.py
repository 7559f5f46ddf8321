"""cci against a remote Incus named as the incus CLI knows it (``--remote``, ``[incus] remote``): the test daemon on
loopback HTTPS, its client certificate trusted (scripts/incus-test-env). What does not need the workspace works
through it; a session, whose workspace a remote server cannot mount, is refused before anything is made; an
untrusted client, a changed server certificate and an unknown remote are one line each with the fix."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
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


def test_a_session_on_a_remote_is_refused_before_anything_is_made(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], launched: str
) -> None:
    before = {instance.name for instance in incus.instances.all()}
    networks = {network.name for network in incus.networks.all()}
    for command in (("run", "--", "true"), ("run", "--prompt", "hello")):
        result = run_cci("--workspace", str(workspace), "--remote", incus_env.REMOTE, *command,
                         env=remote_environ(cci_environ))
        assert_error(result, 4, f"the remote Incus https://{incus_env.HTTPS_ADDRESS} cannot mount {workspace} "
                                "from this host", "--remote local")
    # nor a mount into a container there
    result = run_cci("--remote", incus_env.REMOTE, "container", "mount", launched, "mnt", str(workspace),
                     "/mnt",
                     env=remote_environ(cci_environ))
    assert_error(result, 4, f"cannot mount {workspace} from this host")
    assert "mnt" not in {device for device in incus.instances.get(launched).devices}
    assert {instance.name for instance in incus.instances.all()} == before
    assert {network.name for network in incus.networks.all()} == networks


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
