"""Host mounts: --storage directories apart from the workspace, sources checked again before a start, and the
Incus check that each mount came from the place its source names."""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_core.config import Override, load_config
from cci_core.context import Mount
from cci_core.errors import UsageError
from cci_core.mount_checks import check_sources, check_storage_layout
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_record import State
from cci_builtin_plugins.incus.mount_check import expected_place, misplaced, parse_mountinfo
from tests.fakes import FakeDriver

# -- --storage apart from the workspace and from each other ------------------------------------------------


@pytest.mark.parametrize(("storage", "message"), [
    (("/p/ws/data",), "storage directory /p/ws/data is in the workspace (/p/ws)"),
    (("/p/ws",), "storage directory /p/ws is in the workspace (/p/ws)"),
    (("/p",), "storage directory /p holds the workspace (/p/ws)"),
    (("/s/a", "/s/a/b"), "storage directory /s/a holds another storage directory (/s/a/b)"),
    (("/s/a/b", "/s/a"), "storage directory /s/a/b is in another storage directory (/s/a)"),
    (("/s/a", "/s/a"), "storage directory /s/a is in another storage directory (/s/a)"),
])
def test_storage_in_or_around_the_workspace_or_another_is_refused(storage: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError, match="could swap") as caught:
        check_storage_layout(Path("/p/ws"), tuple(Path(path) for path in storage))
    assert caught.value.message.startswith(message)


def test_storage_apart_from_the_workspace_passes() -> None:
    check_storage_layout(Path("/p/ws"), (Path("/p/data"), Path("/p/ws-data"), Path("/s/a")))


# -- sources checked again before a start ------------------------------------------------------------------


def test_sources_that_are_still_real_directories_pass(tmp_path: Path) -> None:
    (tmp_path / "ws/.git").mkdir(parents=True)
    (tmp_path / "ws/.git/config").write_text("")
    check_sources([Mount("workspace", tmp_path / "ws", "/workspace"),
                   Mount("protect-0", tmp_path / "ws/.git/config", "/workspace/.git/config")], "c1")


def test_a_source_swapped_for_a_link_or_behind_one_is_refused(tmp_path: Path) -> None:
    secret, data = tmp_path / "secret", tmp_path / "data"
    (secret / "inner").mkdir(parents=True)
    data.symlink_to(secret)
    with pytest.raises(UsageError, match=f"c1: the source {data} of its mount /storage/data is no longer what cci "
                                         f"mounted .it leads to {secret}.; it was not started"):
        check_sources([Mount("storage0", data, "/storage/data")], "c1")
    with pytest.raises(UsageError, match="no longer what cci mounted"):  # a link further up the path
        check_sources([Mount("storage0", data / "inner", "/storage/inner")], "c1")
    with pytest.raises(UsageError, match="no longer what cci mounted"):  # a plugin's mount too
        check_sources([Mount("protect-git", data, "/workspace/.git")], "c1")


def test_a_missing_source_or_a_file_for_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"c1: the source {tmp_path / 'gone'} of its mount /storage/gone is gone"):
        check_sources([Mount("storage0", tmp_path / "gone", "/storage/gone")], "c1")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="no longer what cci mounted .it is not a directory."):
        check_sources([Mount("workspace", tmp_path / "file", "/workspace")], "c1")


def test_a_workspace_that_now_holds_the_home_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="holds your home directory"):
        check_sources([Mount("workspace", Path.home().resolve().parent, "/workspace")], "c1")


def test_a_restart_whose_storage_became_a_link_is_refused_and_stays_saved(tmp_path: Path) -> None:
    workspace, data, secret = tmp_path / "ws", tmp_path / "data", tmp_path / "secret"
    for directory in (workspace, data, secret):
        directory.mkdir()
    config = load_config(workspace, environ={}, overrides=[Override("defaults.driver", "fake", "test"),
                                                           Override("defaults.persistent", True, "test")])
    sessions = SessionManager(config, FakeDriver(config), load_plugins(entry_points=False))
    container, _ctx = sessions.launch(LaunchRequest(workspace, storage=(data,)))
    sessions.finish(container)
    data.rmdir()
    data.symlink_to(secret)
    with pytest.raises(UsageError, match="is no longer what cci mounted"):
        sessions.reuse(workspace)
    assert (container.status(), container.labels()["state"]) == ("stopped", State.SAVED)


def test_a_launch_with_storage_in_the_workspace_makes_nothing(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    config = load_config(tmp_path, environ={}, overrides=[Override("defaults.driver", "fake", "test")])
    sessions = SessionManager(config, FakeDriver(config), load_plugins(entry_points=False))
    with pytest.raises(UsageError, match="is in the workspace"):
        sessions.launch(LaunchRequest(tmp_path, kind="run", storage=(tmp_path / "data",)))
    assert sessions.driver.list_containers() == []


# -- Incus: each host mount came from where the host finds its source --------------------------------------

HOST = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
48 27 0:42 /@home /home rw,relatime - btrfs /dev/loop0 rw,subvol=/@home
49 27 254:0 /var/tmp /tmp rw,relatime - ext4 /dev/vda rw
50 48 0:51 / /home/u/big rw,relatime - ext4 /dev/vdc rw
"""
DEVICES = {
    "root": {"type": "disk", "path": "/", "pool": "default"},
    "workspace": {"type": "disk", "source": "/home/u/p", "path": "/workspace", "shift": "true"},
    "storage0": {"type": "disk", "source": "/tmp/data", "path": "/storage/data"},
    "storage1": {"type": "disk", "source": "/home/u/big", "path": "/storage/big/"},
}
CONTAINER = """\
213 185 0:42 /containers/c1/rootfs / rw,relatime,idmapped - btrfs /dev/loop0 rw
226 213 0:42 /@home/u/p /workspace rw,relatime,idmapped - btrfs /dev/loop0 rw
227 213 254:0 /var/tmp/data /storage/data rw,relatime - ext4 /dev/vda rw
228 213 0:51 / /storage/big rw,relatime - ext4 /dev/vdc rw
"""


def test_the_expected_place_follows_the_host_mount_table() -> None:
    host = parse_mountinfo(HOST)
    assert expected_place("/home/u/p", host) == ("0:42", "/@home/u/p")  # a btrfs subvolume's root
    assert expected_place("/tmp/data/", host) == ("254:0", "/var/tmp/data")  # a bind mount on the host
    assert expected_place("/home/u/big", host) == ("0:51", "/")  # a mount point itself
    assert expected_place("/homework", host) == ("254:0", "/homework")  # not under /home


def test_mounts_from_their_sources_pass() -> None:
    assert misplaced(DEVICES, CONTAINER, HOST) == []


def test_a_mount_that_followed_a_link_or_is_missing_or_covered_is_caught() -> None:
    followed = CONTAINER.replace("/var/tmp/data /storage/data", "/@home/u/.ssh /storage/data")
    assert misplaced(DEVICES, followed.replace("227 213 254:0", "227 213 0:42"), HOST) == ["storage0"]
    assert misplaced(DEVICES, CONTAINER.replace("0:42 /@home/u/p", "0:43 /@home/u/p"), HOST) == ["workspace"]
    missing = "".join(line + "\n" for line in CONTAINER.splitlines() if "/storage/big" not in line)
    assert misplaced(DEVICES, missing, HOST) == ["storage1"]
    covered = CONTAINER + "290 227 0:50 / /storage/data rw - tmpfs tmpfs rw\n"
    assert misplaced(DEVICES, covered, HOST) == ["storage0"]
    deleted = CONTAINER.replace("/var/tmp/data /storage/data", "/var/tmp/data//deleted /storage/data")
    assert misplaced(DEVICES, deleted, HOST) == ["storage0"]


def test_storage_in_another_sessions_workspace_is_not_started(tmp_path: Path) -> None:
    """That session's agent could swap it for a link at any moment: no start of this one mounts it."""
    for directory in ("ws", "other", "other/data"):
        (tmp_path / directory).mkdir()
    config = load_config(tmp_path / "ws", environ={}, overrides=[Override("defaults.driver", "fake", "test")])
    sessions = SessionManager(config, FakeDriver(config), load_plugins(entry_points=False))
    sessions.launch(LaunchRequest(tmp_path / "other", kind="run"))
    with pytest.raises(UsageError, match=f"its storage directory {tmp_path / 'other/data'} is in the workspace of "
                                         f"another session .{tmp_path / 'other'}."):
        sessions.launch(LaunchRequest(tmp_path / "ws", kind="run", storage=(tmp_path / "other/data",)))
    assert [info.labels["workspace"] for info in sessions.driver.list_containers()] == [str(tmp_path / "other")]
