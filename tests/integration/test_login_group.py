"""A login that started before the user joined the Incus group: cci runs itself again under ``sg``, once.

Each cci here runs from a process without its supplementary groups (``runuser -g USER``),
as a login from before ``cci setup`` added the user to ``incus-admin`` would.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import incus_env
from tests.integration.conftest import CCI, assert_error
from tests.integration.test_setup import fresh_user  # noqa: F401 (a fixture: a user made and removed for the test)

pytestmark = pytest.mark.incus

GROUP = "incus-admin"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"  # found here: one test gives cci a PATH without sg
NOTE = (f"cci: this login started before you joined {GROUP}: running cci under 'sg {GROUP}' "
        "(log in again to have the group everywhere)\n")


def without_groups(user: str, *args: str, env: dict[str, str], cwd: Path | str = "/",
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """cci as ``user`` with only the user's own group: the group database may list more, the process has none."""
    return subprocess.run([RUNUSER, "-u", user, "-g", user, "--", str(CCI), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def home_of(fresh_user: str) -> Iterator[Path]:  # noqa: F811 (the imported fixture)
    """A home directory for the fresh user (the fixture makes none)."""
    path = Path(tempfile.mkdtemp(prefix="cci-login-group-"))
    shutil.chown(path, fresh_user, fresh_user)
    yield path
    shutil.rmtree(path)


def test_a_member_whose_login_lacks_the_group_lists_through_sg(cci_environ: dict[str, str], fresh_user: str,  # noqa: F811
                                                               home_of: Path) -> None:
    subprocess.run(["usermod", "-aG", GROUP, fresh_user], check=True)
    env = {**cci_environ, "HOME": str(home_of)}
    result = without_groups(fresh_user, "list", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == NOTE  # once: the cci under sg has the group and says nothing
    assert "containers" in json.loads(result.stdout)  # the list Incus gave


def test_exit_code_and_file_ownership_pass_through_sg(cci_environ: dict[str, str]) -> None:
    """The cci under sg has the user's own group again (the gid cci maps), and sg returns cci's exit code."""
    user = pwd.getpwnam(incus_env.TEST_USER)
    assert incus_env.TEST_USER in grp.getgrnam(GROUP).gr_mem
    workspace = Path("/tmp") / f"cci-login-group-{os.getpid()}"
    workspace.mkdir()
    try:
        shutil.chown(workspace, user.pw_uid, user.pw_gid)
        env = {**cci_environ, "HOME": user.pw_dir}
        result = without_groups(incus_env.TEST_USER, "--workspace", str(workspace), "run", "--", "sh", "-c",
                                "echo data > made; exit 7", env=env)
        assert result.returncode == 7, result.stderr
        assert result.stderr == NOTE
        made = (workspace / "made").stat()
        assert (made.st_uid, made.st_gid) == (user.pw_uid, user.pw_gid)
    finally:
        shutil.rmtree(workspace)


def test_a_user_not_in_the_group_gets_one_line_and_no_sg(cci_environ: dict[str, str], fresh_user: str,  # noqa: F811
                                                         home_of: Path) -> None:
    result = without_groups(fresh_user, "list", env={**cci_environ, "HOME": str(home_of)})
    assert_error(result, 4, f"permission denied on {incus_env.SOCKET}",
                 f"add yourself to the {GROUP} group ('sudo usermod -aG {GROUP} $USER'), then log in again")


@pytest.mark.parametrize("change", [
    pytest.param({"CCI_SG_GROUP": GROUP}, id="already-under-sg"),  # sg gave the group, yet the socket still refuses
    pytest.param({"PATH": "/nonexistent"}, id="no-sg"),
])
def test_a_member_that_cannot_use_sg_gets_one_line_that_says_to_log_in_again(
        cci_environ: dict[str, str], fresh_user: str, home_of: Path, change: dict[str, str]) -> None:  # noqa: F811
    subprocess.run(["usermod", "-aG", GROUP, fresh_user], check=True)
    result = without_groups(fresh_user, "list", env={**cci_environ, "HOME": str(home_of), **change})
    assert_error(result, 4, f"permission denied on {incus_env.SOCKET}",
                 f"you are in group {GROUP}, but this login started before that: log in again "
                 f"(or run 'newgrp {GROUP}')")
