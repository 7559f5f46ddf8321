"""The workspace copied into a container and back (for a server that cannot mount it), against the real Incus: one
streamed archive each way, excludes honoured, links never followed and none made leading out of the workspace, a
file changed on both sides kept in both versions, a removal passed on only where the host left the file alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cci_core.driver import TreeLimits
from cci_core.workspace_sync import Excludes, sync_to_container, sync_to_host
from cci_builtin_plugins.incus.driver import IncusDriver

LIMITS = TreeLimits(max_file=1 << 30, max_bytes=1 << 32, timeout=120, idle=60)
EXCLUDES = Excludes(["node_modules/", "*.log", "/build/out"])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "build").mkdir()
    (root / "a.txt").write_text("a\n")
    (root / "b.txt").write_text("b\n")
    (root / "c.txt").write_text("c\n")
    (root / "src" / "main.py").write_text("print('hi')\n")
    (root / "src" / "run.sh").write_text("#!/bin/sh\n")
    (root / "src" / "run.sh").chmod(0o755)
    (root / "src" / "deep" / "data.bin").write_bytes(os.urandom(2 << 20))
    (root / "node_modules" / "x" / "index.js").write_text("skipped\n")
    (root / "debug.log").write_text("skipped\n")
    (root / "build" / "out").write_text("skipped\n")
    (root / "build" / "keep").write_text("kept\n")
    (root / "src" / "to-a").symlink_to("../a.txt")
    (root / "passwd").symlink_to("/etc/passwd")  # copied as a link: never followed on the host
    return root


def inside(container: object, script: str) -> str:
    result = container.exec(["sh", "-c", script])  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.stderr
    return str(result.stdout)


def test_a_workspace_goes_in_whole_less_its_excludes_and_comes_back_with_both_sides_changes_kept(
    workspace: Path, driver: IncusDriver, launched: str
) -> None:
    container = driver.get(launched)
    records = sync_to_container(container, workspace, "/workspace", uid=1000, excludes=EXCLUDES, limits=LIMITS)
    listing = inside(container, "cd /workspace && find . | sort && stat -c '%n %u %a' src/run.sh a.txt && "
                                "readlink passwd src/to-a && sha256sum src/deep/data.bin")
    assert "./node_modules" not in listing and "./debug.log" not in listing and "./build/out" not in listing
    assert "./build/keep" in listing and "./src/deep/data.bin" in listing
    assert "src/run.sh 1000 755" in listing and "a.txt 1000 644" in listing
    assert "/etc/passwd\n../a.txt\n" in listing
    assert records["src/deep/data.bin"].digest in listing
    assert "node_modules" not in records and "debug.log" not in records

    # both sides change things
    inside(container, "cd /workspace && echo container > a.txt && rm b.txt && echo both-c > c.txt && "
                      "echo new > new.txt && mkdir -p made/here && echo deep > made/here/f && "
                      "ln -s /etc/shadow out && ln -s ../../a.txt made/here/up && ln -s .. parent && "
                      "echo container-log > debug.log && rm src/main.py")
    (workspace / "c.txt").write_text("host-c\n")
    (workspace / "src" / "main.py").write_text("print('host changed me')\n")  # removed inside, changed here
    (workspace / "host-only.txt").write_text("mine\n")

    report, records = sync_to_host(container, "/workspace", workspace, records, excludes=EXCLUDES, limits=LIMITS)
    assert (workspace / "a.txt").read_text() == "container\n"
    assert not (workspace / "b.txt").exists()
    assert (workspace / "new.txt").read_text() == "new\n" and (workspace / "made/here/f").read_text() == "deep\n"
    assert os.readlink(workspace / "made/here/up") == "../../a.txt"
    # changed on both sides: the host's stays, the container's beside it
    assert (workspace / "c.txt").read_text() == "host-c\n"
    [(path, kept)] = report.conflicts
    assert path == "c.txt" and kept.startswith("c.txt.cci-container-")
    assert (workspace / kept).read_text() == "both-c\n"
    # removed inside but changed here: kept; links leading out are not made; excluded paths are not touched
    assert (workspace / "src/main.py").read_text() == "print('host changed me')\n"
    assert not os.path.lexists(workspace / "out") and not os.path.lexists(workspace / "parent")
    assert {"out", "parent"} <= set(report.skipped)
    assert (workspace / "debug.log").read_text() == "skipped\n" and (workspace / "host-only.txt").exists()
    assert not [name for name in os.listdir(workspace) if name.startswith(".cci-sync-")]
    assert stat.S_IMODE((workspace / "src/run.sh").stat().st_mode) == 0o755

    # nothing changed since: nothing to do, and the conflict is not told again
    again, records = sync_to_host(container, "/workspace", workspace, records, excludes=EXCLUDES, limits=LIMITS)
    assert (again.written, again.removed, again.conflicts) == ([], [], [])

    # the container swaps a directory for a link out of the workspace: nothing is written through it
    inside(container, "cd /workspace && rm -rf made && ln -s /etc made && echo x > src/deep/new")
    third, records = sync_to_host(container, "/workspace", workspace, records, excludes=EXCLUDES, limits=LIMITS)
    assert "made" in third.skipped and (workspace / "made").is_dir() and not (workspace / "made").is_symlink()
    assert (workspace / "src/deep/new").read_text() == "x\n"


def test_a_tree_read_more_slowly_than_incus_passes_output_on_comes_whole(
    tmp_path: Path, driver: IncusDriver, launched: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Incus passes a command's output on for one second after the command exits, then drops the rest: the archiver
    inside waits until cci has read the whole archive (over the loopback remote, whose buffers hold the most)."""
    import time

    from cci_core.config import Override, load_config
    from tests import incus_env

    monkeypatch.setenv("INCUS_CONF", str(incus_env.REMOTE_CONF))
    remote = IncusDriver(load_config(tmp_path, environ={"INCUS_CONF": str(incus_env.REMOTE_CONF)},
                                     overrides=[Override("incus.remote", incus_env.REMOTE, "test")]))
    container = remote.get(launched)
    inside(container, "mkdir -p /srv/tree && cd /srv/tree && "
                      "for i in $(seq 10 49); do head -c 400000 /dev/urandom > f$i; done")
    sizes = {}
    with container.read_tree("/srv/tree", LIMITS) as entries:
        for entry in entries:
            if entry.kind == "file" and entry.data is not None:
                time.sleep(0.25)  # a slow writer on the host: the archive is all sent long before it is read
                sizes[entry.path.removeprefix("./")] = len(entry.data.read())
    assert sizes == {f"f{index}": 400000 for index in range(10, 50)}
