"""Copying a tree out of a container: hostile tar streams, the safe writer's bounds and filters, tidying ~/.cci."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from cci_core.driver import TreeEntry, TreeLimits, TreeReadError
from cci_core.session_store import SavedSession, SessionStore
from cci_core.tree_copy import ENTRY_SIZE, CopyPolicy, copy_tree
from cci_builtin_plugins.incus.tree_reader import ChunkPipe, _NoArchive, tar_entries

LIMITS = TreeLimits(max_file=1 << 20, max_bytes=64 << 20, timeout=30, idle=5)


def archive(*members: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, link: str = "",
           mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    if data is not None:
        info.size = len(data)
    return info, data


ROOT = member("./", tarfile.DIRTYPE, mode=0o755)


def copied(stream: bytes, tmp_path: Path, policy: CopyPolicy = CopyPolicy(), **limits: int):
    destination = tmp_path / "copy"
    report = copy_tree(tar_entries(io.BytesIO(stream), LIMITS._replace(**limits)), destination, policy,
                       source="/home/code/.tool", max_file=LIMITS.max_file)
    found = {}
    if destination.exists():
        for directory, subdirectories, files in os.walk(destination):
            for name in subdirectories + files:
                path = Path(directory, name)
                key = str(path.relative_to(destination))
                found[key] = (f"-> {os.readlink(path)}" if path.is_symlink() else
                              "dir" if path.is_dir() else path.read_bytes())
    return found, report


def test_only_files_directories_and_links_inside_are_written(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    stream = archive(
        ROOT, member("./sub/", tarfile.DIRTYPE), member("./sub/ok.txt", data=b"ok"),
        member("../escape.txt", data=b"x"), member("./sub/../../escape2.txt", data=b"x"),
        member("/abs.txt", data=b"x"), member(f"{outside}/abs2.txt", data=b"x"),
        member("./hard", tarfile.LNKTYPE, link="/etc/passwd"), member("./dev", tarfile.CHRTYPE),
        member("./fifo", tarfile.FIFOTYPE), member("./blk", tarfile.BLKTYPE),
        member("./up", tarfile.SYMTYPE, link="../../etc"), member("./abs-out", tarfile.SYMTYPE, link="/etc/passwd"),
        member("./abs-in", tarfile.SYMTYPE, link="/home/code/.tool/sub/ok.txt"),
        member("./rel-in", tarfile.SYMTYPE, link="sub/ok.txt"),
        member("./sub/ok.txt", data=b"second copy"),  # a duplicate never replaces the first
        member("./via", tarfile.SYMTYPE, link="sub"), member("./via/through-link.txt", data=b"x"),
        member("./sub/run.sh", data=b"#!/bin/sh", mode=0o4755),
    )
    found, report = copied(stream, tmp_path)
    assert found == {"sub": "dir", "sub/ok.txt": b"ok", "sub/run.sh": b"#!/bin/sh", "abs-in": "-> sub/ok.txt",
                     "rel-in": "-> sub/ok.txt", "via": "-> sub"}
    assert (tmp_path / "copy" / "sub" / "run.sh").stat().st_mode & 0o7777 == 0o700  # no setuid, private
    assert (tmp_path / "copy" / "sub" / "ok.txt").stat().st_mode & 0o7777 == 0o600
    assert report.refused >= 6 and not outside.exists() and not (tmp_path / "escape.txt").exists()


def test_a_tree_that_is_not_a_directory_gives_nothing(tmp_path: Path) -> None:
    found, _report = copied(archive(member("./", tarfile.SYMTYPE, link="/home/me")), tmp_path)
    assert found == {} and not (tmp_path / "copy").exists()


def test_an_oversize_member_is_skipped_and_the_rest_copied(tmp_path: Path) -> None:
    stream = archive(ROOT, member("./big", data=b"x" * (LIMITS.max_file + 1)), member("./after", data=b"a"))
    found, report = copied(stream, tmp_path)
    assert found == {"after": b"a"} and report.too_large == ["big"]


def test_the_copy_stops_at_its_total_bound(tmp_path: Path) -> None:
    stream = archive(ROOT, *(member(f"./f{index}", data=bytes([65 + index]) * 1000) for index in range(5)))
    destination = tmp_path / "copy"
    report = copy_tree(tar_entries(io.BytesIO(stream), LIMITS), destination,
                       max_total=2 * (ENTRY_SIZE + 1000) + 500)
    assert sorted(path.name for path in destination.iterdir()) == ["f0", "f1"] and report.truncated


def test_entries_without_content_count_toward_the_total_bound(tmp_path: Path) -> None:
    # a save of a stopped container (the SFTP walk) passes names and link targets uncounted by the reader: 20,000
    # empty directories, links or empty files took 80 MB of the host's disk under a save_size of 1 MiB
    kinds = [TreeEntry(f"d{index}", "directory", 0o755) for index in range(20_000)]
    kinds += [TreeEntry(f"l{index}", "symlink", target="./" * 1000 + "d0") for index in range(20_000)]
    kinds += [TreeEntry(f"f{index}", "file", 0o644, 0, data=io.BytesIO(b"")) for index in range(20_000)]
    destination = tmp_path / "copy"
    report = copy_tree([TreeEntry(".", "directory", 0o755), *kinds], destination, max_total=1 << 20)
    made = len(os.listdir(destination))
    assert report.truncated and 0 < made <= (1 << 20) // ENTRY_SIZE


def test_runs_of_zeros_become_holes(tmp_path: Path) -> None:
    data = b"head" + bytes(900_000) + b"tail"
    found, _report = copied(archive(ROOT, member("./holes", data=data)), tmp_path)
    assert found["holes"] == data
    assert (tmp_path / "copy" / "holes").stat().st_blocks * 512 < 300_000


@pytest.mark.parametrize("problem", ["huge pax header", "sparse member", "negative size", "broken off"])
def test_a_malformed_archive_abandons_the_copy(problem: str, tmp_path: Path) -> None:
    if problem == "huge pax header":
        info, data = member("./x", data=b"x")
        info.pax_headers = {"comment": "c" * 100_000}
        stream = archive(ROOT, (info, data), fmt=tarfile.PAX_FORMAT)
    elif problem == "sparse member":
        stream = bytearray(archive(ROOT, member("./x", data=b"x" * 512)))
        _retype(stream, 512, tarfile.GNUTYPE_SPARSE)
    elif problem == "negative size":
        stream = bytearray(archive(ROOT, member("./x", data=b"x")))
        stream[512 + 124:512 + 136] = b"\xff" * 12  # base-256: -1
        _retype(stream, 512, tarfile.REGTYPE)
    else:
        stream = archive(ROOT, member("./x", data=b"x" * 5000))[:1536]
    with pytest.raises(TreeReadError):
        copied(bytes(stream), tmp_path)


def _retype(stream: bytearray, offset: int, kind: bytes) -> None:
    """Set a header's type and fix its checksum."""
    stream[offset + 156:offset + 157] = kind
    stream[offset + 148:offset + 156] = b" " * 8
    checksum = sum(stream[offset:offset + 512])
    stream[offset + 148:offset + 156] = b"%06o\0 " % checksum


def test_no_archive_at_all_is_told_apart(tmp_path: Path) -> None:
    with pytest.raises(_NoArchive):
        list(tar_entries(io.BytesIO(b""), LIMITS))


def test_a_container_that_sends_forever_or_nothing_is_cut_off() -> None:
    endless = ChunkPipe(LIMITS._replace(max_bytes=1 << 20), time.monotonic() + 30)

    def flood() -> None:
        huge = tarfile.TarInfo("./x")
        huge.size = 1 << 40  # over max_file: skipped, so read through
        endless.feed(ROOT[0].tobuf(tarfile.GNU_FORMAT) + huge.tobuf(tarfile.GNU_FORMAT))
        for _chunk in range(100):
            endless.feed(b"y" * 65536)

    threading.Thread(target=flood, daemon=True).start()
    with pytest.raises(TreeReadError, match="sent over 1 MiB"):
        list(tar_entries(endless, LIMITS))
    endless.abandon()

    silent = ChunkPipe(LIMITS._replace(idle=0.2), time.monotonic() + 30)
    started = time.monotonic()
    with pytest.raises(TreeReadError, match="no data from the container"):
        list(tar_entries(silent, LIMITS))
    assert time.monotonic() - started < 5


def test_secrets_are_filtered_before_anything_is_written(tmp_path: Path) -> None:
    policy = CopyPolicy(excluded=frozenset({(".credentials.json",), ("auth",)}), secrets=(b"sk-injected-token",),
                        secret_keys=frozenset({"primaryApiKey", "accessToken"}))
    backup = json.dumps({"primaryApiKey": "sk-made-inside", "theme": "dark",
                         "oauth": {"accessToken": "at-1", "scopes": ["a"]}}).encode()
    stream = archive(
        ROOT, member("./.credentials.json", data=b"{}"), member("./auth/", tarfile.DIRTYPE),
        member("./auth/token", data=b"t"), member("./backups/", tarfile.DIRTYPE),
        member("./backups/.claude.json.backup.1700000000", data=backup),
        member("./backups/broken.json", data=b'{"primaryApiKey": "sk-x", '),
        member("./notes.txt", data=b"the token is " + b"sk-injected-token" + b" ok"),
        member("./big.log", data=b"z" * 3_000_000 + b"sk-injected-token"),
        member("./transcript.jsonl", data=b'{"primaryApiKey": "kept: not a JSON document"}\n'),
    )
    found, report = copied(stream, tmp_path, policy, max_file=8 << 20)
    assert json.loads(found.pop("backups/.claude.json.backup.1700000000")) == {"theme": "dark",
                                                                                "oauth": {"scopes": ["a"]}}
    assert found == {"backups": "dir", "transcript.jsonl": b'{"primaryApiKey": "kept: not a JSON document"}\n'}
    assert sorted(report.dropped) == ["backups/broken.json", "notes.txt"]
    assert report.too_large == ["big.log"]  # over the copy's own max_file (1 MiB)


# --- tidying ~/.cci ----------------------------------------------------------------------------------------


def test_leftovers_of_killed_saves_and_locks_of_removed_sessions_are_tidied(tmp_path: Path) -> None:
    import fcntl

    store = SessionStore(tmp_path)
    store.save(SavedSession("s1", "demo", str(tmp_path), "c", 1, False, "", "", Path()), lambda d: None)
    tool_dir = store.tool_dir("demo")
    (tool_dir / ".saving-s1-0badc0de" / "x").mkdir(parents=True)  # killed mid-save
    (tool_dir / ".retired-s1-0badc0de").mkdir()
    (tool_dir / ".saving-s2-12345678").mkdir()  # a save under way: its lock is held
    (tool_dir / ".save-gone.lock").touch()
    (tool_dir / ".resume-gone.lock").touch()
    held = os.open(tool_dir / ".save-s2.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        store.tidy()
    finally:
        os.close(held)
    assert sorted(path.name for path in tool_dir.iterdir()) == [".save-s1.lock", ".save-s2.lock",
                                                                ".saving-s2-12345678", "s1"]


def test_what_tar_inside_could_not_read_is_passed_on_as_unreadable() -> None:
    from cci_core.driver import UNREADABLE
    from cci_builtin_plugins.incus.tree_reader import _Archive

    archive = _Archive(None, "c1", "/home/code/.tool", LIMITS, time.monotonic() + 5)  # type: ignore[arg-type]
    long = "/".join(["0" * 200] * 21)
    archive.stderr += (f"cci-oversize 300000000 big.bin\ntar: ./{long}: Cannot stat: File name too long\n"
                       "tar: ./a: Cannot open: Permission denied\n"
                       "tar: Exiting with failure status due to previous errors\n").encode()
    assert [(entry.path, entry.kind, entry.size) for entry in archive._left_out()] == [
        ("big.bin", "file", 300000000), (long, UNREADABLE, 0), ("a", UNREADABLE, 0)]
