"""The fast paths never import pylxd or requests (about 300 ms on the reference machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import CCI_SCRIPT

HEAVY = ("pylxd", "requests", "urllib3", "importlib.metadata")


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["plugins", "list"], ["config", "show"]])
def test_fast_path_imports_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(CCI_SCRIPT), "--workspace", str(tmp_path), *args],
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

    from cci_core.cli.gc_pause import resume

    gc.disable()
    try:
        resume()
        assert not gc.isenabled()
    finally:
        gc.enable()


PLANTED = "import pathlib; pathlib.Path(__file__).with_name('RAN').write_text(__name__); raise SystemExit('planted')\n"


def _plant(workspace: Path) -> None:
    """What an agent can leave in the workspace, the usual current directory, for a host-side Python to import."""
    for module in ("click", "pluggy", "platformdirs", "tomllib", "evilmod"):
        (workspace / f"{module}.py").write_text(PLANTED)
    package = workspace / "cci_core"
    package.mkdir()
    (package / "__init__.py").write_text(PLANTED)
    (package / "__main__.py").write_text(PLANTED)
    plugin = workspace / "evil-1.0.dist-info"
    plugin.mkdir()
    (plugin / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
    (plugin / "entry_points.txt").write_text("[cci]\nevil = evilmod\n")


@pytest.mark.parametrize("args", [["--help"], ["plugins", "list"], ["config", "show"]])
def test_the_console_script_imports_nothing_from_the_workspace(args: list[str], tmp_path: Path) -> None:
    """The console script's directory, not the current one, heads sys.path: nothing planted there runs."""
    _plant(tmp_path)
    result = subprocess.run([str(CCI_SCRIPT), "--workspace", str(tmp_path), *args],
                            capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "RAN").exists() and not (tmp_path / "cci_core" / "RAN").exists()
    assert "planted" not in result.stdout + result.stderr and "evil" not in result.stdout


def test_python_m_cci_core_is_no_entry_point(tmp_path: Path) -> None:
    """``python -m`` puts the current directory first, where a planted package would win: cci offers no such
    entry (docs/cli.md says why), so a clean directory gets Python's refusal, not cci."""
    result = subprocess.run([sys.executable, "-m", "cci_core", "--help"],
                            capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode != 0 and "cannot be directly executed" in result.stderr
