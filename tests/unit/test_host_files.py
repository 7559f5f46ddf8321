"""cci_core.host_files: reading and writing where the container may plant symlinks, at any moment."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from cci_core.errors import UsageError
from cci_core.host_files import PlantedLinkError, SafeDirectory, chmod_handle, open_directory, open_parent


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace ``ws`` (the container writes there) and a ``victim`` directory (the user's ~/.ssh, say)."""
    workspace, victim = tmp_path / "ws", tmp_path / "victim"
    (workspace / "sub").mkdir(parents=True)
    victim.mkdir()
    return workspace, victim


def write_into(path: Path, workspace: Path, name: str = "f", data: bytes = b"x") -> None:
    with open_directory(path, untrusted=[workspace], create=True) as directory:
        directory.write(name, [data])


def test_the_users_own_links_outside_the_workspace_are_followed(layout: tuple[Path, Path], tmp_path: Path) -> None:
    workspace, victim = layout
    (tmp_path / "mine").symlink_to(victim)
    (tmp_path / "relative").symlink_to("victim")
    (tmp_path / "project").symlink_to(workspace)  # a link to the workspace itself, made by the user
    write_into(tmp_path / "mine" / "new", workspace)
    write_into(tmp_path / "relative", workspace, "g")
    write_into(tmp_path / "project" / "sub", workspace)
    assert (victim / "new" / "f").read_bytes() == b"x" and (victim / "g").read_bytes() == b"x"
    assert (workspace / "sub" / "f").read_bytes() == b"x"


@pytest.mark.parametrize("planted", ["sub", "sub/deeper", "sub/deeper/deepest"])
def test_a_link_anywhere_inside_the_workspace_is_never_followed(layout: tuple[Path, Path], planted: str) -> None:
    workspace, victim = layout
    (workspace / planted).parent.mkdir(parents=True, exist_ok=True)
    if (workspace / planted).is_dir():
        (workspace / planted).rmdir()
    (workspace / planted).symlink_to(victim)
    for destination in (workspace / planted, workspace / planted / "more", workspace / "sub" / ".." / planted):
        with pytest.raises(PlantedLinkError, match=f"goes through a symlink: {workspace / planted} -> {victim}"):
            write_into(destination, workspace)
    assert os.listdir(victim) == []


def test_a_path_through_the_users_link_into_the_workspace_is_checked_there(layout: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    workspace, victim = layout
    (workspace / "out").symlink_to(victim)  # planted
    (tmp_path / "project").symlink_to(workspace)  # the user's
    (tmp_path / "shortcut").symlink_to(workspace / "out" / "deeper")  # the user's, but it passes the planted one
    for destination in (tmp_path / "project" / "out", tmp_path / "shortcut"):
        with pytest.raises(PlantedLinkError, match="goes through a symlink"):
            write_into(destination, workspace)
    assert os.listdir(victim) == []


def test_a_link_loop_and_a_file_on_the_way_are_errors(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as loop:
        open_directory(tmp_path / "loop" / "x")
    assert loop.value.errno == errno.ELOOP
    with pytest.raises(NotADirectoryError):
        open_directory(tmp_path / "file" / "x", create=True)
    with pytest.raises(FileNotFoundError):
        open_directory(tmp_path / "missing")


def test_a_directory_swapped_for_a_link_after_it_was_opened_keeps_getting_the_writes(
        layout: tuple[Path, Path]) -> None:
    workspace, victim = layout
    with open_directory(workspace / "sub", untrusted=[workspace]) as directory:
        (workspace / "sub").rename(workspace / "moved")
        (workspace / "sub").symlink_to(victim)
        directory.write("f", [b"kept"])
        with directory.directory("d", create=True) as child:
            child.write("g", [b"too"])
    assert os.listdir(victim) == []
    assert (workspace / "moved" / "f").read_bytes() == b"kept" and (workspace / "moved" / "d" / "g").exists()


def test_entries_replace_links_in_their_place_and_never_follow_them(layout: tuple[Path, Path]) -> None:
    workspace, victim = layout
    (victim / "authorized_keys").write_text("mine\n")
    sub = workspace / "sub"
    (sub / "file").symlink_to(victim / "authorized_keys")
    (sub / "dangling").symlink_to(victim / "new")
    (sub / "dir").symlink_to(victim)
    (sub / "plain").write_text("")
    with open_directory(sub, untrusted=[workspace]) as directory:
        directory.write("file", [b"attacker\n"])
        directory.write("dangling", [b"attacker\n"])
        with pytest.raises(OSError):  # without replace_link a link is an error, never followed
            directory.directory("dir", create=True)
        directory.directory("dir", create=True, replace_link=True).close()
        directory.symlink("plain", "elsewhere")
        directory.symlink("file", "x")
        with pytest.raises(OSError):
            directory.symlink("dir", "x")  # a directory is not replaced
        for name in ("..", ".", "a/b", ""):
            with pytest.raises(OSError, match="not a single file name"):
                directory.write(name, [b""])
    assert sorted(os.listdir(victim)) == ["authorized_keys"] and (victim / "authorized_keys").read_text() == "mine\n"
    assert (sub / "dangling").read_text() == "attacker\n" and not (sub / "dangling").is_symlink()
    assert (sub / "dir").is_dir() and not (sub / "dir").is_symlink()
    assert os.readlink(sub / "plain") == "elsewhere" and os.readlink(sub / "file") == "x"


def test_writes_keep_holes_and_take_the_mode_less_the_umask_and_setuid(tmp_path: Path) -> None:
    megabyte = bytes(1 << 20)
    with SafeDirectory(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), str(tmp_path)) as directory:
        directory.write("sparse", [b"a", megabyte, megabyte, b"b", megabyte])
        directory.write("run", [b"#!/bin/sh\n"], mode=0o4777)
        directory.write("run", [b"#!/bin/sh\n"])  # an existing file keeps its mode
    sparse = tmp_path / "sparse"
    assert sparse.stat().st_size == 3 * len(megabyte) + 2
    assert sparse.read_bytes() == b"a" + 2 * megabyte + b"b" + megabyte
    assert sparse.stat().st_blocks * 512 < len(megabyte)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "run").stat().st_mode & 0o7777 == 0o777 & ~umask


def test_open_parent_names_the_last_component(layout: tuple[Path, Path]) -> None:
    workspace, _victim = layout
    with open_parent(workspace / "new" / "file", untrusted=[workspace], create=True) as (directory, name):
        assert name == "file" and directory.path == str(workspace / "new")
    with pytest.raises(UsageError, match="no name"):
        with open_parent("/"):
            pass


def test_reading_follows_the_users_last_link_only_and_never_waits_on_a_fifo(layout: tuple[Path, Path],
                                                                            tmp_path: Path) -> None:
    workspace, victim = layout
    (victim / "key").write_text("secret")
    (workspace / "key").symlink_to(victim / "key")  # planted
    (tmp_path / "mine").symlink_to(workspace / "sub")  # the user's
    (workspace / "sub" / "notes").write_text("notes")
    (workspace / "sub" / "notes").chmod(0o640)
    os.mkfifo(workspace / "sub" / "fifo")
    with open_parent(tmp_path / "mine", untrusted=[workspace], follow=True) as (directory, name):
        assert (directory.path, name, directory.untrusted) == (str(workspace), "sub", True)
    with open_parent(tmp_path / "mine" / "notes", untrusted=[workspace], follow=True) as (directory, name):
        assert directory.read(name) == (b"notes", 0o640)
        assert directory.names() == ["fifo", "notes"]
        with pytest.raises(OSError, match="not a regular file"):
            directory.read("fifo")  # opened without waiting for a writer, then refused
    with pytest.raises(PlantedLinkError, match=f"is a symlink inside the workspace: {workspace / 'key'} -> "):
        with open_parent(workspace / "key", untrusted=[workspace], follow=True):
            pass
    with open_parent(workspace / "key", untrusted=[workspace]) as (directory, name):
        with pytest.raises(OSError, match="is a symlink"):
            directory.read(name)


def test_a_fifo_socket_or_device_in_the_way_is_replaced_never_written_to(tmp_path: Path) -> None:
    import socket

    os.mkfifo(tmp_path / "fifo")
    reader = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)  # the container, listening
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        with open_directory(tmp_path) as directory:
            directory.write("fifo", [b"data"])
            directory.write("sock", [b"data"])
        assert os.read(reader, 100) == b""
    finally:
        os.close(reader)
        server.close()
    for name in ("fifo", "sock"):
        assert (tmp_path / name).is_file() and (tmp_path / name).read_bytes() == b"data"


def test_paths_beneath_never_pass_a_link_and_reads_are_bounded_and_never_wait(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"0123456789")
    (tmp_path / "a" / "b" / "f").chmod(0o640)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    os.mkfifo(tmp_path / "a" / "fifo")
    with pytest.raises(OSError):
        SafeDirectory.at(tmp_path / "link")
    with SafeDirectory.at(tmp_path) as root:
        with root.beneath("a/b") as directory:
            assert directory.read("f", 4) == (b"0123", 0o640) and directory.read("f") == (b"0123456789", 0o640)
        with root.beneath("") as again:
            assert again.fd != root.fd and again.names() == ["a", "link"]
        for through_a_link in ("link/b", "a/../link", "a/b/f"):
            with pytest.raises(OSError):
                root.beneath(through_a_link)
        info = root.lstat_beneath("a/b/f")
        assert info is not None and info.st_size == 10
        link = root.lstat_beneath("link")
        assert link is not None and stat.S_ISLNK(link.st_mode)
        assert [root.lstat_beneath(path) for path in ("link/b/f", "a/../a/b/f", "a/b/f/x", "a/nope")] == [None] * 4
        with root.beneath("a") as directory, pytest.raises(OSError, match="not a regular file"):
            directory.read("fifo", 4)  # opened without waiting for a writer, then refused


def test_created_files_never_replace_anything_and_handles_reach_the_entry_itself(tmp_path: Path) -> None:
    with SafeDirectory.at(tmp_path) as directory:
        with directory.create("new", 0o600) as file:
            for _chunk in range(64):  # chunks smaller than the blocks skipped over still become holes
                file.write(bytes(32 << 10))
            file.write(b"end")
            file.finish()
        directory.symlink("link", "new", replace=False)
        for taken in ("new", "link"):
            with pytest.raises(FileExistsError), directory.create(taken):
                pass
            with pytest.raises(FileExistsError):
                directory.symlink(taken, "elsewhere", replace=False)
        with directory.handle("new") as handle:
            chmod_handle(handle, 0o4700)
        with directory.handle("link") as handle:
            assert stat.S_ISLNK(os.fstat(handle).st_mode)
        directory.remove("link")
    new = tmp_path / "new"
    assert new.read_bytes() == bytes(2 << 20) + b"end" and new.stat().st_blocks * 512 < 1 << 20
    assert stat.S_IMODE(new.stat().st_mode) == 0o4700 and os.listdir(tmp_path) == ["new"]
