"""The fast paths never import pylxd or requests (about 300 ms on the reference machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("pylxd", "requests", "urllib3", "importlib.metadata")


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["plugins", "list"], ["config", "show"]])
def test_fast_path_imports_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cci_core", "--workspace", str(tmp_path), *args],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "cci_core.cli.main" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


GC_AFTER = """
import gc, sys
from cci_core.cli import entry
sys.argv = ["cci", *sys.argv[1:]]
try:
    entry.main()
except SystemExit:
    pass
print("collector", "on" if gc.isenabled() else "off")
"""


@pytest.mark.parametrize(("args", "state"), [(["--help"], "off"), (["config", "path"], "on")])
def test_the_collector_is_paused_until_a_command_runs(args: list[str], state: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", GC_AFTER, "--workspace", str(tmp_path), *args],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert result.stdout.splitlines()[-1] == f"collector {state}", result.stderr


def test_resuming_leaves_a_collector_paused_by_someone_else_alone() -> None:
    import gc

    from cci_core.cli.entry import resume_gc

    gc.disable()
    try:
        resume_gc()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_python_m_does_not_import_from_the_workspace(tmp_path: Path) -> None:
    """The agent can write the workspace, the usual current directory: nothing planted there may run."""
    (tmp_path / "click.py").write_text("raise SystemExit('planted click imported')\n")
    planted = tmp_path / "evil-1.0.dist-info"
    planted.mkdir()
    (planted / "entry_points.txt").write_text("[cci]\nevil = evilmod\n")
    (tmp_path / "evilmod.py").write_text("raise SystemExit('planted plugin imported')\n")
    result = subprocess.run([sys.executable, "-m", "cci_core", "--workspace", str(tmp_path), "plugins", "list"],
                            capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "planted" not in result.stdout + result.stderr and "evil" not in result.stdout
