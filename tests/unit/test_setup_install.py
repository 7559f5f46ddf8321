"""``scripts/install``: shellcheck-clean, its bad input is one clear line and a non-zero exit, and it ends by
running ``cci setup`` (options after ``--`` go to it; ``--no-setup`` skips it; its failure is the exit code)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

INSTALL = Path(__file__).resolve().parents[2] / "scripts" / "install"


def run(*args: str, path: str = "/usr/bin:/bin", home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/bash", str(INSTALL), *args], env={"PATH": path, "HOME": str(home), **env},
                          capture_output=True, text=True, check=False, timeout=60)


#: a pipx that "installs" a cci which records how it was called, and whose setup exits with $SETUP_EXIT
FAKE_PIPX = """#!/bin/sh
mkdir -p "$HOME/.local/bin"
cat > "$HOME/.local/bin/cci" <<'CCI'
#!/bin/sh
echo "$*" >> "$HOME/calls"
[ "$1" = --version ] && echo "cci 9.9"
[ "$1" = setup ] && exit "${SETUP_EXIT:-0}"
exit 0
CCI
chmod +x "$HOME/.local/bin/cci"
"""


def fake_tools(tmp_path: Path, **scripts: str) -> str:
    """A PATH whose first directory holds the fake pipx (and ``scripts``, name: body) before the system's."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name, body in {"pipx": FAKE_PIPX, **scripts}.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return f"{bin_dir}:{tmp_path / '.local' / 'bin'}:/usr/bin:/bin"


def calls(home: Path) -> list[str]:
    return (home / "calls").read_text().splitlines()


def test_install_ends_by_running_cci_setup(tmp_path: Path) -> None:
    result = run("--method", "pipx", path=fake_tools(tmp_path), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path) == ["--version", "--version", "setup"]
    assert result.stdout.splitlines()[-2:] == [
        "==> cci setup", "next: cd ~/your-project && cci shell    (Claude Code in a container for that directory)"]


def test_options_after_the_double_dash_go_to_cci_setup(tmp_path: Path) -> None:
    result = run("--method", "pipx", "--", "--no-image", "--dry-run", path=fake_tools(tmp_path), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path)[-1] == "setup --no-image --dry-run"
    assert result.stdout.splitlines()[-1] == "==> cci setup --no-image --dry-run"  # a dry run: no 'next' yet


def test_no_setup_installs_only(tmp_path: Path) -> None:
    result = run("--method", "pipx", "--no-setup", path=fake_tools(tmp_path), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "setup" not in calls(tmp_path)
    assert result.stdout.splitlines()[-1].startswith("next: cci setup ")


def test_a_failed_setup_is_the_exit_code(tmp_path: Path) -> None:
    result = run("--method", "pipx", path=fake_tools(tmp_path), home=tmp_path, SETUP_EXIT="3")
    assert result.returncode == 3
    assert result.stderr == ("install: cci is installed, but 'cci setup' failed (exit code 3): fix what it says, "
                             "then run 'cci setup' again\n")


def test_setup_options_with_no_setup_are_refused(tmp_path: Path) -> None:
    result = run("--no-setup", "--", "--no-image", home=tmp_path)
    assert (result.returncode, result.stderr) == (
        2, "install: options after -- are for cci setup, which --no-setup skips\n")
    assert not (tmp_path / ".local").exists()


def test_with_sudo_everything_is_passed_on_to_the_users_run_without_sudos_variables(tmp_path: Path) -> None:
    record = tmp_path / "runuser-args"
    path = fake_tools(tmp_path, id='#!/bin/sh\n[ "$1" = -u ] && echo 0 || echo root\n',
                      runuser=f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    result = run("--method", "pipx", "--no-setup", path=path, home=tmp_path, SUDO_USER="alice", SUDO_UID="1000")
    assert result.returncode == 0, result.stderr
    argv = record.read_text().splitlines()
    assert argv[:3] == ["-u", "alice", "--"]
    assert argv[3:12] == ["env", "-u", "SUDO_USER", "-u", "SUDO_UID", "-u", "SUDO_GID", "-u", "SUDO_COMMAND"]
    assert argv[-6:] == ["bash", str(INSTALL), "--method", "pipx", "--no-setup", "--"]

    result = run("--", "--no-image", path=path, home=tmp_path, SUDO_USER="alice")
    assert record.read_text().splitlines()[-3:] == [str(INSTALL), "--", "--no-image"]


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
