"""``cci doctor`` as a user runs it, on this machine's real Incus (read only: doctor changes nothing)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests import incus_env
from tests.integration.conftest import run_cci

pytestmark = pytest.mark.incus

STATUSES = ("ok", "warn", "fail")


def lines_of(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """``name -> (status, what follows the name)`` from the text output; every line must be a check line."""
    assert "Traceback" not in result.stdout + result.stderr
    parsed: dict[str, tuple[str, str]] = {}
    for line in result.stdout.splitlines():
        status, rest = line.split(None, 1)
        assert status in STATUSES, line
        name = _name_of(rest)
        parsed[name] = (status, rest[len(name):].lstrip())
    return parsed


NAMES = ("config", "plugins", "driver", "tool", "network policy", "incus installed", "incus group",
         "incus reachable", "incus project", "storage", "network", "network acls", "policy subnets",
         "idmapped mounts", "uid mapping", "image", "proxy image", "skipped")


def _name_of(rest: str) -> str:
    for name in sorted(NAMES, key=len, reverse=True):
        if rest.startswith(name + "  "):
            return name
    raise AssertionError(f"unknown check in {rest!r}")


def test_everything_is_ok_as_root(cci_environ: dict[str, str]) -> None:
    result = run_cci("doctor", env=cci_environ)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    checks = lines_of(result)
    assert list(checks) == ["config", "plugins", "driver", "tool", "network policy", "incus installed",
                            "incus group", "incus reachable", "incus project", "storage", "network",
                            "network acls", "policy subnets", "idmapped mounts", "uid mapping", "image", "proxy image"]
    # the test image is a base without the tool: the image check warns (it records no claude version)
    assert {name: status for name, (status, _) in checks.items() if status != "ok"} == {"image": "warn"}
    assert checks["proxy image"][1].startswith("cci-proxy (")  # scripts/incus-test-env builds it
    assert checks["incus installed"][1].endswith(f"socket {incus_env.SOCKET}")
    assert "running as root" in checks["incus group"][1]
    assert checks["incus reachable"][1].startswith("incus ")
    assert checks["incus reachable"][1].endswith(f"(API 1.0) on {incus_env.SOCKET}")
    assert checks["incus project"][1].endswith(incus_env.PROJECT)
    assert checks["storage"][1].endswith(f"pool {incus_env.POOL} (btrfs)")
    assert checks["network"][1].endswith(f"eth0 on {incus_env.BRIDGE} (bridge)")
    assert checks["network acls"][1] == (f"supported: 'restricted' gets a bridge of its own (NAT off, subnets from "
                                         f"{incus_env.NETWORK_SUBNETS}; see 'cci network list')")
    assert checks["policy subnets"][1].startswith(f"free /24s left in {incus_env.NETWORK_SUBNETS} (next: ")
    assert "supported by the kernel" in checks["idmapped mounts"][1]
    assert "running as root" in checks["uid mapping"][1]
    assert checks["image"][1].startswith(f"{incus_env.IMAGE} (")
    assert "records no claude version (image property cci.tool.claude.version)" in checks["image"][1]
    assert f"fix: rebuild it with 'cci build --alias {incus_env.IMAGE} --force'" in checks["image"][1]


def test_a_missing_image_fails_with_the_build_fix(cci_environ: dict[str, str]) -> None:
    result = run_cci("doctor", env={**cci_environ, "CCI_DEFAULTS_IMAGE": "does-not-exist"})
    assert result.returncode == 1
    status, line = lines_of(result)["image"]
    assert status == "fail"
    assert line == (f"image 'does-not-exist' not found in project {incus_env.PROJECT}  "
                                      "fix: run 'cci setup' (it builds the image) or 'cci build', or choose "
                                      "another with --image or [defaults] image")
    assert result.stderr == "cci: 1 check failed: image\n"
    assert all(status == "ok" for name, (status, _) in lines_of(result).items() if name != "image")


def test_json_output(cci_environ: dict[str, str]) -> None:
    result = run_cci("doctor", "--format", "json", env={**cci_environ, "CCI_DEFAULTS_IMAGE": "does-not-exist"})
    assert result.returncode == 1
    rows = json.loads(result.stdout)
    assert all(set(row) == {"name", "status", "detail", "fix"} and row["status"] in STATUSES for row in rows)
    by_name = {row["name"]: row for row in rows}
    assert by_name["storage"] == {"name": "storage", "status": "ok", "detail": f"pool {incus_env.POOL} (btrfs)",
                                  "fix": ""}
    assert by_name["image"]["status"] == "fail" and "'cci build'" in by_name["image"]["fix"]


def test_as_a_user_in_the_incus_group(cci_environ: dict[str, str]) -> None:
    env = {**cci_environ, "HOME": f"/home/{incus_env.TEST_USER}"}
    result = run_cci("doctor", env=env, user=incus_env.TEST_USER)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = lines_of(result)
    assert checks["incus group"] == ("ok", f"you are in group incus-admin, which may use "
                                           f"{incus_env.SOCKET}")
    # cci maps every user but root with raw.idmap: /etc/subuid and /etc/subgid delegate the test user's ids
    status, line = checks["uid mapping"]
    assert status == "ok"
    assert "cci maps your uid 1001 onto the container user (1000) with raw.idmap" in line
    assert "root delegates uid 1001 in /etc/subuid and gid 1001 in /etc/subgid" in line
    assert checks["image"][0] == "warn"  # the test image records no tool version
    assert checks["storage"][0] == checks["incus reachable"][0] == "ok"


def test_as_a_user_outside_the_incus_group() -> None:
    # the socket is given explicitly, so a per-user socket (incus-user) is never picked and nothing is created
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8",
           "CCI_INCUS_SOCKET": str(incus_env.SOCKET), "CCI_INCUS_PROJECT": incus_env.PROJECT}
    result = run_cci("doctor", env=env, user="nobody")
    assert result.returncode == 1
    checks = lines_of(result)
    assert checks["incus group"] == (
        "fail", f"no read/write access to {incus_env.SOCKET}: you are not in group incus-admin  "
                "fix: run 'cci setup' (or 'sudo usermod -aG incus-admin $USER'), then log out and in again")
    assert checks["incus reachable"][0] == "fail" and "permission denied" in checks["incus reachable"][1]
    assert checks["skipped"][0] == "warn"


def test_no_incus_socket(cci_environ: dict[str, str]) -> None:
    result = run_cci("doctor", env={**cci_environ, "CCI_INCUS_SOCKET": "/nonexistent"})
    assert result.returncode == 1
    checks = lines_of(result)
    assert list(checks)[-4:] == ["incus installed", "incus reachable", "uid mapping", "skipped"]
    assert checks["incus installed"][0] == "fail"
    assert ("no Incus socket at /nonexistent ([incus] socket, set by env CCI_INCUS_SOCKET)  "
            "fix: correct or unset [incus] socket") in checks["incus installed"][1]
    assert checks["incus reachable"] == ("fail", "Incus is not running: no socket at /nonexistent  "
                                                 "fix: install Incus and start it (e.g. 'sudo systemctl start "
                                                 "incus'), or set [incus] socket")
    assert checks["skipped"][0] == "warn" and "storage, network, network acls, policy subnets, idmapped mounts, image" in checks["skipped"][1]
    assert result.stderr == "cci: 2 checks failed: incus installed, incus reachable\n"
