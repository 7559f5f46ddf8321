"""Commands run as the container user get the user's groups: the exec request the Incus driver composes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cci_builtin_plugins.incus import execute
from cci_builtin_plugins.incus.container import IncusContainer
from cci_builtin_plugins.incus.errors import APIError
from cci_builtin_plugins.incus.execute import GROUPS_LABEL, GROUPS_PROPERTY, SETPRIV, UID_ONLY, exec_body

ENV = {"HOME": "/home/code", "USER": "code", "PATH": "/usr/bin:/bin"}


def test_with_setpriv_a_user_command_runs_as_root_through_setpriv() -> None:
    body = exec_body(["id", "-Gn"], user=1000, group=1001, environment=ENV, cwd="/workspace", interactive=False,
                     user_groups=True)
    assert (body["user"], body["group"]) == (0, 0)
    assert body["command"][:2] == ["/bin/sh", "-c"]
    assert body["command"][4:] == ["1000", "--reuid=1000", "--regid=1001", "--", "id", "-Gn"]
    assert body["environment"] == ENV and body["cwd"] == "/workspace"


@pytest.mark.parametrize("user, user_groups", [(1000, False), (0, True)])
def test_root_and_containers_without_setpriv_get_uid_and_gid_from_incus(user: int, user_groups: bool) -> None:
    body = exec_body(["id"], user=user, group=user, environment=ENV, cwd=None, interactive=True,
                     user_groups=user_groups)
    assert body["command"] == ["id"] and (body["user"], body["group"]) == (user, user)


def _run_switch(tmp_path: Path, uid: int, environment: dict[str, str]) -> list[str]:
    """Run the composed command with a fake setpriv (prints its arguments and HOME/USER) and getent (knows 1000)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "setpriv").write_text('#!/bin/sh\necho "HOME=${HOME-unset} USER=${USER-unset}"\nprintf "%s\\n" "$@"\n')
    (bin_dir / "getent").write_text('#!/bin/sh\n[ "$1" = passwd ] && [ "$2" = 1000 ]\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    body = exec_body(["echo", "a b"], user=uid, group=uid, environment=environment, cwd=None, interactive=False,
                     user_groups=True)
    # Incus adds HOME and USER for root when the request has none
    env = {"HOME": "/root", "USER": "root", **environment, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run(body["command"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            check=True)
    return result.stdout.splitlines()


def test_a_uid_with_a_user_entry_gets_its_groups_one_without_gets_none(tmp_path: Path) -> None:
    assert _run_switch(tmp_path, 1000, ENV) == [
        "HOME=/home/code USER=code", "--init-groups", "--reuid=1000", "--regid=1000", "--", "echo", "a b"]
    assert _run_switch(tmp_path, 4242, ENV)[1:3] == ["--clear-groups", "--reuid=4242"]


def test_the_variables_incus_adds_for_root_alone_are_unset_again(tmp_path: Path) -> None:
    assert _run_switch(tmp_path, 1000, {"PATH": "/usr/bin:/bin"})[0] == "HOME=unset USER=unset"
    assert _run_switch(tmp_path, 1000, {"HOME": "/root"})[0] == "HOME=/root USER=unset"


class _API:
    """Records the requests a container makes (label and image PATCHes are expected)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail = fail

    def call(self, method: str, path: str, action: str, body: Any = None, **_: Any) -> None:
        self.calls.append((method, path, body))
        if self.fail and path.startswith("/1.0/images/"):
            raise APIError(action, 404, "not found")


FINGERPRINT = "ab12" * 16
IMAGE_KEY = f"image.{GROUPS_PROPERTY}"


def _container(api: _API, **config: str) -> IncusContainer:
    instance = {"name": "c1", "config": {"volatile.base_image": FINGERPRINT, **config}}
    return IncusContainer(api, instance)  # type: ignore[arg-type]


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The containers probed; each probe finds setpriv."""
    found: list[str] = []
    monkeypatch.setattr(execute, "probe_user_groups", lambda api, name: found.append(name) or SETPRIV)
    return found


@pytest.mark.parametrize("found", [SETPRIV, UID_ONLY])
def test_setpriv_is_probed_once_and_recorded_on_the_container_and_its_image(
    monkeypatch: pytest.MonkeyPatch, found: str
) -> None:
    probed: list[str] = []
    monkeypatch.setattr(execute, "probe_user_groups", lambda api, name: probed.append(name) or found)
    api = _API()
    container = _container(api)
    assert container._user_groups(0) is False and probed == []  # root needs nothing
    assert container._user_groups(1000) is (found == SETPRIV)
    assert container._user_groups(1000) is (found == SETPRIV)
    assert probed == ["c1"]
    assert api.calls == [
        ("PATCH", "/1.0/instances/c1", {"config": {f"user.cci.{GROUPS_LABEL}": found}}),
        ("PATCH", f"/1.0/images/{FINGERPRINT}", {"properties": {GROUPS_PROPERTY: f"{found} {FINGERPRINT}"}}),
    ]
    # another cci process reads the label with the instance: no probe
    again = _container(api, **{f"user.cci.{GROUPS_LABEL}": found})
    assert again._user_groups(1000) is (found == SETPRIV) and probed == ["c1"]


def test_a_container_of_a_probed_image_needs_no_probe(probes: list[str]) -> None:
    api = _API()
    container = _container(api, **{IMAGE_KEY: f"{UID_ONLY} {FINGERPRINT}"})
    assert container._user_groups(1000) is False
    assert probes == [] and api.calls == []


def test_an_image_property_inherited_from_another_image_does_not_count(probes: list[str]) -> None:
    # an image published from a container of the probed image carries its property, with the old fingerprint
    api = _API(fail=True)  # and the image is gone meanwhile: recording on it is best effort
    container = _container(api, **{IMAGE_KEY: f"{UID_ONLY} {'cd34' * 16}"})
    assert container._user_groups(1000) is True
    assert probes == ["c1"] and container.labels()[GROUPS_LABEL] == SETPRIV


def test_a_probe_that_did_not_finish_is_not_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "probe_user_groups", lambda api, name: None)
    api = _API()
    assert _container(api)._user_groups(1000) is False and api.calls == []
