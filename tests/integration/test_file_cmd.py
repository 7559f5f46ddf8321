"""``cci file push`` and ``cci file pull`` on the real Incus, through the installed ``cci`` executable."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from cci_core.context import Mount
from cci_core.driver import ContainerSpec
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import CCI, assert_error, run_cci, unique_name

pytestmark = pytest.mark.incus

BINARY = bytes(range(256))


def cci_file(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cci("file", *args, env=env)


def in_container(name: str, script: str, env: dict[str, str]) -> str:
    result = run_cci("container", "exec", name, "--", "sh", "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(BINARY)
    return root


def test_push_and_pull_files_keep_content_and_mode(launched: str, cci_environ: dict[str, str],
                                                   tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(BINARY)
    secret.chmod(0o600)

    for args in ([str(script), f"{launched}:/tmp/run.sh"],
                 [str(script), f"{launched}:/home/code/", "--uid", "1000", "--gid", "1000"],
                 [str(secret), f"{launched}:/tmp/secret.bin"]):
        result = cci_file("push", *args, env=cci_environ)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    stat = in_container(launched, "stat -c '%a %u %g %n' /tmp/run.sh /home/code/run.sh /tmp/secret.bin; /tmp/run.sh",
                        cci_environ)
    assert stat == "755 0 0 /tmp/run.sh\n755 1000 1000 /home/code/run.sh\n600 0 0 /tmp/secret.bin\nhi\n"

    into = tmp_path / "out"
    into.mkdir()
    assert cci_file("pull", f"{launched}:/tmp/secret.bin", str(into), env=cci_environ).returncode == 0
    assert (into / "secret.bin").read_bytes() == BINARY
    copy = tmp_path / "new" / "deeper" / "copy.sh"
    assert cci_file("pull", f"{launched}:/home/code/run.sh", str(copy), env=cci_environ).returncode == 0
    assert copy.read_bytes() == script.read_bytes()


def test_push_a_directory_recursively(launched: str, cci_environ: dict[str, str], tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    assert_error(cci_file("push", str(tree), f"{launched}:/tmp/tree", env=cci_environ), 2,
                 f"{tree} is a directory", "use -r")

    assert cci_file("push", "-r", str(tree), f"{launched}:/tmp/copy", env=cci_environ).returncode == 0
    assert cci_file("push", "--recursive", str(tree), f"{launched}:/opt/", env=cci_environ).returncode == 0
    listing = in_container(launched, "cd /tmp/copy && find . | sort && cat a.txt && cd /opt/tree && find . | sort",
                           cci_environ)
    found = ".\n./a.txt\n./empty\n./sub\n./sub/b.bin\n"
    assert listing == found + "alpha\n" + found
    pulled = tmp_path / "b.bin"
    assert cci_file("pull", f"{launched}:/tmp/copy/sub/b.bin", str(pulled), env=cci_environ).returncode == 0
    assert pulled.read_bytes() == BINARY


def test_pull_a_directory_recursively(driver: IncusDriver, cci_environ: dict[str, str], tmp_path: Path) -> None:
    name = unique_name()
    driver.create(ContainerSpec(name, incus_env.IMAGE))  # files can be copied while it is stopped
    tree = make_tree(tmp_path / "tree")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o750)
    (tree / "link").symlink_to("a.txt")
    assert cci_file("push", "-r", str(tree), f"{name}:/root/tree", env=cci_environ).returncode == 0

    result = cci_file("pull", "-r", f"{name}:/root/tree", str(tmp_path / "copy"), env=cci_environ)
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "saved"
    saved.mkdir()
    result = cci_file("pull", "-r", f"{name}:/root/tree", f"{saved}/", env=cci_environ)
    assert result.returncode == 0, result.stderr
    for copy in (tmp_path / "copy", saved / "tree"):
        assert sorted(str(path.relative_to(copy)) for path in copy.rglob("*")) == ["a.txt", "empty", "link",
                                                                                 "run.sh", "sub", "sub/b.bin"]
        assert (copy / "a.txt").read_text() == "alpha\n"
        assert (copy / "run.sh").stat().st_mode & 0o777 == 0o750  # modes survive both ways (umask 022)
        assert os.readlink(copy / "link") == "a.txt"
        assert (copy / "sub" / "b.bin").read_bytes() == BINARY

    # a single file behind a symlink (Debian's /etc/os-release) is pulled as its content
    result = cci_file("pull", f"{name}:/etc/os-release", str(tmp_path / "os-release"), env=cci_environ)
    assert result.returncode == 0, result.stderr
    assert "ID=debian" in (tmp_path / "os-release").read_text()
    # and a directory without -r is refused, writing nothing
    assert_error(cci_file("pull", f"{name}:/root/tree", str(tmp_path / "nothing"), env=cci_environ), 2,
                 "is a directory", "-r")
    assert not (tmp_path / "nothing").exists()


def test_file_errors_are_one_line(driver: IncusDriver, cci_environ: dict[str, str], tmp_path: Path) -> None:
    name = unique_name()
    driver.create(ContainerSpec(name, incus_env.IMAGE))
    local = tmp_path / "local.txt"
    local.write_text("x")

    for remote in ("no-colon", f"{name}/tmp/x", ":/tmp/x", "./dir:/tmp/x", "bad_name:/tmp/x"):
        assert_error(cci_file("push", str(local), remote, env=cci_environ), 2, f"'{remote}' is not CONTAINER:PATH")
        assert_error(cci_file("pull", remote, str(tmp_path), env=cci_environ), 2, f"'{remote}' is not CONTAINER:PATH")
    assert_error(cci_file("push", str(local), f"{name}:tmp/x", env=cci_environ), 2, "absolute", "'tmp/x'")
    assert_error(cci_file("pull", f"{name}:", str(tmp_path), env=cci_environ), 2, "absolute")

    unknown = unique_name()
    assert_error(cci_file("push", str(local), f"{unknown}:/tmp/x", env=cci_environ), 5,
                 f"no container named '{unknown}'")
    assert_error(cci_file("pull", f"{unknown}:/tmp/x", str(tmp_path), env=cci_environ), 5,
                 f"no container named '{unknown}'")
    assert_error(cci_file("pull", f"{name}:/no/such/file", str(tmp_path / "f"), env=cci_environ), 5, "/no/such/file")
    assert not (tmp_path / "f").exists()
    assert_error(cci_file("push", str(tmp_path / "missing"), f"{name}:/tmp/x", env=cci_environ), 5,
                 f"{tmp_path / 'missing'} does not exist")
    assert_error(cci_file("push", str(local), f"{name}:/no/such/dir/x", env=cci_environ), 5, "/no/such/dir/x")

    (tmp_path / "hostname").mkdir()
    assert_error(cci_file("pull", f"{name}:/etc/hostname", str(tmp_path), env=cci_environ), 2,
                 f"{tmp_path / 'hostname'} is a directory")


def test_pull_never_writes_through_symlinks_at_the_destination(launched: str, cci_environ: dict[str, str],
                                                               tmp_path: Path) -> None:
    """Where a copy lands (often the workspace), the container may have planted links to the user's files."""
    victim = tmp_path / "home-ssh"
    victim.mkdir()
    (victim / "authorized_keys").write_text("mine\n")
    dest = tmp_path / "tree"  # an earlier copy, merged into
    dest.mkdir()
    (dest / "keys").symlink_to(victim)  # a directory the pull merges into
    (dest / "note.txt").symlink_to(victim / "authorized_keys")  # a file the pull writes
    in_container(launched, "mkdir -p /tmp/tree/keys && echo attacker > /tmp/tree/keys/authorized_keys"
                           " && echo attacker > /tmp/tree/note.txt", cci_environ)
    result = cci_file("pull", "-r", f"{launched}:/tmp/tree", str(tmp_path), env=cci_environ)
    assert result.returncode == 0, result.stderr
    assert (victim / "authorized_keys").read_text() == "mine\n" and sorted(os.listdir(victim)) == ["authorized_keys"]
    assert not (dest / "keys").is_symlink() and (dest / "keys" / "authorized_keys").read_text() == "attacker\n"
    assert not (dest / "note.txt").is_symlink() and (dest / "note.txt").read_text() == "attacker\n"

    (tmp_path / "single").symlink_to(victim / "authorized_keys")
    assert_error(cci_file("pull", f"{launched}:/tmp/tree/note.txt", str(tmp_path / "single"), env=cci_environ),
                 2, "is a symlink")
    workspace = tmp_path / "ws-with-links"
    workspace.mkdir()
    (workspace / "out").symlink_to(victim)  # a directory on the way, inside the workspace
    through = run_cci("--workspace", str(workspace), "file", "pull", f"{launched}:/tmp/tree/note.txt",
                      str(workspace / "out" / "authorized_keys"), env=cci_environ)
    assert_error(through, 2, "goes through a symlink")
    assert (victim / "authorized_keys").read_text() == "mine\n"


def test_pull_copies_no_fifo_socket_or_device_and_never_hangs_on_one(launched: str, cci_environ: dict[str, str],
                                                                     tmp_path: Path) -> None:
    """Incus's file API waits forever for a writer when asked to read a FIFO: a pull never asks it."""
    in_container(launched, "mkdir -p /tmp/odd/sub && echo a > /tmp/odd/a.txt && echo b > /tmp/odd/sub/b.txt"
                           " && mkfifo /tmp/odd/fifo /tmp/odd/sub/pipe && ln -s /dev/null /tmp/odd/null"
                           " && ln -s /tmp/odd/sub/b.txt /tmp/odd/sub/abs"
                           " && perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Local => \"/tmp/odd/sock\","
                           " Listen => 1) or die $!'", cci_environ)
    result = run_cci("file", "pull", "-r", f"{launched}:/tmp/odd", str(tmp_path), env=cci_environ, timeout=60)
    assert result.returncode == 0, result.stderr
    only = "(only regular files, directories and symlinks are copied)"
    assert sorted(result.stderr.splitlines()) == [
        f"cci: warning: skipped {launched}:/tmp/odd/{path}: a {kind} {only}"
        for path, kind in (("fifo", "FIFO"), ("sock", "socket"), ("sub/pipe", "FIFO"))]
    copy = tmp_path / "odd"
    assert sorted(str(path.relative_to(copy)) for path in copy.rglob("*")) == [
        "a.txt", "null", "sub", "sub/abs", "sub/b.txt"]
    assert (copy / "sub" / "b.txt").read_text() == "b\n" and os.readlink(copy / "null") == "/dev/null"
    assert os.readlink(copy / "sub" / "abs") == "b.txt"  # inside the copied tree: made relative

    for path, kind in (("/tmp/odd/fifo", "FIFO"), ("/tmp/odd/sock", "socket"), ("/tmp/odd/null", "device"),
                       ("/dev/zero", "device")):
        single = run_cci("file", "pull", f"{launched}:{path}", str(tmp_path / "single"), env=cci_environ, timeout=60)
        assert_error(single, 2, f"{launched}:{path} is a {kind}", "only regular files")
        assert not (tmp_path / "single").exists()


def test_pull_into_the_workspace_never_writes_through_a_link_swapped_in_meanwhile(
        driver: IncusDriver, cci_environ: dict[str, str], tmp_path: Path) -> None:
    """The container swaps the destination for a link to a host directory over and over while pulls run:
    a check of the path before writing would pass, and the writes would follow the link."""
    workspace, victim = tmp_path / "ws", tmp_path / "home-ssh"
    workspace.mkdir()
    victim.mkdir()
    name = unique_name()
    driver.create(ContainerSpec(name, incus_env.IMAGE, mounts=[Mount("workspace", workspace, "/workspace")])).start()
    in_container(name, "mkdir -p /root/tree/sub && for i in $(seq 1 60); do echo $i > /root/tree/sub/f$i; done"
                       " && echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIattacker attacker' > /root/tree/authorized_keys",
                 cci_environ)
    # out/ is a directory, then a link to the victim, then the directory again..., swapped with renames (never
    # missing for long). The link's target is a host path: meaningless inside, followed by whoever opens it on
    # the host. A pull that opens out/ while it is the directory writes into it, wherever it is moved to.
    swap = ("mkdir '/workspace/out'; symlink $ARGV[0], '/workspace/.link'; until (-e '/workspace/stop') {"
            " rename '/workspace/out', '/workspace/.dir'; rename '/workspace/.link', '/workspace/out'; for (1..2e4) {}"
            " rename '/workspace/out', '/workspace/.link'; rename '/workspace/.dir', '/workspace/out'; for (1..2e4) {} }")
    swapper = subprocess.Popen([str(CCI), "container", "exec", name, "--", "timeout", "300", "perl", "-e", swap,
                                str(victim)],
                               env=cci_environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (workspace / "out").is_symlink():  # the swapping has begun
            assert swapper.poll() is None, swapper.communicate()[1]
            assert time.monotonic() < deadline, "the swap loop did not start"
        copied = 0
        for _attempt in range(12):
            result = run_cci("--workspace", str(workspace), "file", "pull", "-r", f"{name}:/root/tree",
                             f"{workspace}/out/", env=cci_environ)
            assert sorted(os.listdir(victim)) == [], result.stderr
            if result.returncode:  # out/ was the link when it was opened
                assert_error(result, 2, f"{workspace}/out goes through a symlink: {workspace}/out -> {victim}")
            copied += result.returncode == 0
    finally:
        (workspace / "stop").touch()
        swapper.wait(timeout=60)
    copy = next(path for path in (workspace / "out", workspace / ".dir") if path.is_dir() and not path.is_symlink())
    assert copied and (copy / "tree" / "authorized_keys").read_text().startswith("ssh-ed25519")
    assert len(os.listdir(copy / "tree" / "sub")) == 60


def test_a_large_sparse_file_is_streamed_and_stays_sparse(launched: str, cci_environ: dict[str, str],
                                                          tmp_path: Path) -> None:
    """A file is never read whole into memory: cci runs with 300 MB of address space for a 512 MiB file."""
    in_container(launched, "mkdir /tmp/big && truncate -s 512M /tmp/big/sparse && printf end >> /tmp/big/sparse",
                 cci_environ)
    size = (512 << 20) + 3
    for args in ([f"{launched}:/tmp/big/sparse", str(tmp_path / "one")], ["-r", f"{launched}:/tmp/big", str(tmp_path)]):
        result = subprocess.run(["prlimit", "--as=300000000", str(CCI), "file", "pull", *args], env=cci_environ,
                                capture_output=True, text=True, timeout=120, check=False)
        assert (result.returncode, result.stderr) == (0, "")
    for copy in (tmp_path / "one", tmp_path / "big" / "sparse"):
        assert copy.stat().st_size == size and copy.stat().st_blocks * 512 < 1 << 20
        with copy.open("rb") as handle:
            handle.seek(size - 4)
            assert handle.read() == b"\0end"


def test_a_large_file_is_pushed_streamed(launched: str, cci_environ: dict[str, str], tmp_path: Path) -> None:
    """A push never reads a file whole into memory: cci runs with 300 MB of address space for a 400 MiB file,
    alone and in a tree."""
    size = (400 << 20) + 3
    tree = tmp_path / "tree"
    tree.mkdir()
    big = tree / "big"
    with big.open("wb") as handle:
        handle.truncate(size - 3)
        handle.seek(size - 3)
        handle.write(b"end")
    for args, where in (([str(big), f"{launched}:/tmp/one"], "/tmp/one"), (["-r", str(tree), f"{launched}:/tmp/tree"],
                                                                          "/tmp/tree/big")):
        result = subprocess.run(["prlimit", "--as=300000000", str(CCI), "file", "push", *args], env=cci_environ,
                                capture_output=True, text=True, timeout=180, check=False)
        assert (result.returncode, result.stderr) == (0, "")
        assert in_container(launched, f"stat -c %s {where}; tail -c 4 {where} | od -An -c", cci_environ).split() == [
            str(size), "\\0", "e", "n", "d"]
        in_container(launched, f"rm {where}", cci_environ)


def test_push_never_reads_through_symlinks_planted_in_the_workspace(launched: str, cci_environ: dict[str, str],
                                                                    tmp_path: Path) -> None:
    """A link the container made in the workspace must not carry the user's files into it."""
    workspace, victim = tmp_path / "ws", tmp_path / "home-ssh"
    (workspace / "dir").mkdir(parents=True)
    victim.mkdir()
    (victim / "id_ed25519").write_text("PRIVATE KEY\n")
    (workspace / "notes.txt").symlink_to(victim / "id_ed25519")
    (workspace / "dir" / "keys").symlink_to(victim)
    (workspace / "ssh").symlink_to(victim)
    os.mkfifo(workspace / "dir" / "fifo")
    (tmp_path / "mine").symlink_to(workspace / "dir")  # the user's own link, outside: followed

    def push(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cci("--workspace", str(workspace), "file", "push", *args, env=cci_environ, timeout=60)

    assert_error(push(str(workspace / "notes.txt"), f"{launched}:/tmp/notes"), 2,
                 f"{workspace / 'notes.txt'} is a symlink inside the workspace")
    assert_error(push("-r", str(workspace / "ssh"), f"{launched}:/tmp/ssh"), 2, "is a symlink inside the workspace")
    assert_error(push(str(workspace / "ssh" / "id_ed25519"), f"{launched}:/tmp/key"), 2, "goes through a symlink")
    for source in (workspace, tmp_path / "mine"):
        result = push("-r", str(source), f"{launched}:/tmp/{source.name}")
        assert (result.returncode, result.stderr) == (0, "")
    listing = in_container(launched, "cd /tmp && find ws mine | sort && readlink ws/notes.txt ws/dir/keys mine/keys"
                                     " && ! grep -r PRIVATE ws mine", cci_environ)
    assert listing == "\n".join(["mine", "mine/keys", "ws", "ws/dir", "ws/dir/keys", "ws/notes.txt", "ws/ssh",
                                 str(victim / "id_ed25519"), str(victim), str(victim)]) + "\n"


def test_a_pull_of_a_tree_deeper_than_the_bound_copies_the_bound_and_says_what_it_skipped(
        launched: str, cci_environ: dict[str, str], tmp_path: Path) -> None:
    in_container(launched, "p=/root/deep && for i in $(seq 700); do p=$p/d; done && mkdir -p $p && "
                           "echo bottom > $p/f && echo top > /root/deep/top.txt", cci_environ)
    result = cci_file("pull", "-r", f"{launched}:/root/deep", str(tmp_path / "copy"), env=cci_environ)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "copy" / "top.txt").read_text() == "top\n"
    bound = tmp_path / "copy" / "/".join(["d"] * 128)
    assert bound.is_dir() and not (bound / "d").exists()
    [skipped] = result.stderr.splitlines()
    assert skipped.startswith(f"cci: warning: skipped {launched}:/root/deep/d/d/") and \
        "a directory more than 128 levels down, not copied with what it holds" in skipped


def test_a_push_of_a_tree_deeper_than_the_bound_is_one_clear_error(
        launched: str, cci_environ: dict[str, str], tmp_path: Path) -> None:
    deep = level = tmp_path / "deep"  # a workspace the agent filled, say
    deep.mkdir()
    for _level in range(1000):
        level = level / "d"
        level.mkdir()
    try:
        result = cci_file("push", "-r", str(deep), f"{launched}:/root/deep", env=cci_environ)
    finally:
        while level != deep:  # bottom up: too deep for pytest's recursive clean-up
            level.rmdir()
            level = level.parent
    assert_error(result, 2, "is more than 512 directories below the directory copied")
