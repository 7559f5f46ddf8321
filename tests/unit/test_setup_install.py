"""``scripts/install``: shellcheck-clean, and its bad input is one clear line and a non-zero exit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

INSTALL = Path(__file__).resolve().parents[2] / "scripts" / "install"


def run(*args: str, path: str = "/usr/bin:/bin", home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/bash", str(INSTALL), *args], env={"PATH": path, "HOME": str(home)},
                          capture_output=True, text=True, check=False, timeout=60)


def test_shellcheck_finds_nothing() -> None:
    result = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_an_unknown_method_is_refused(tmp_path: Path) -> None:
    result = run("--method", "conda", home=tmp_path)
    assert (result.returncode, result.stderr) == (2, "install: --method must be pipx, uv or venv, not 'conda'\n")
    assert not (tmp_path / ".local").exists()


def test_a_method_whose_tool_is_missing_is_refused(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # what the script needs, and no uv
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    for name in ("dirname", "id"):
        (bin_dir / name).symlink_to(shutil.which(name) or f"/usr/bin/{name}")
    result = run("--method", "uv", path=str(bin_dir), home=tmp_path)
    assert (result.returncode, result.stderr) == (1, "install: uv not found (choose --method pipx or venv)\n")
    assert not (tmp_path / ".local").exists()
