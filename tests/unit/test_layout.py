"""cci's own directory on the host, ``~/.cci``, is spelled in one place: :func:`cci_core.layout.state_dir`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: setting defaults as a user writes them in a config file (expanded where the setting is read)
SETTING_DEFAULTS = {"cci_core/config/schema.py"}


def _path_literals() -> list[str]:
    """Every string in the code (not a docstring) that starts a path with ``~/.cci``, or is ``.cci``."""
    found = []
    for file in sorted([*(ROOT / "cci_core").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]):
        relative = file.relative_to(ROOT).as_posix()
        if relative == "cci_core/layout.py" or relative in SETTING_DEFAULTS:
            continue
        tree = ast.parse(file.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and (node.value == ".cci" or node.value.startswith(("~/.cci/", "~/.cci\0")) or node.value == "~/.cci")):
                found.append(f"{relative}:{node.lineno}: {node.value!r}")
    return found


def test_the_state_directory_is_spelled_in_one_place() -> None:
    assert _path_literals() == []


def test_the_state_directory_is_in_the_home_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.layout import state_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    assert state_dir() == tmp_path / ".cci"
    assert state_dir(Path("/elsewhere")) == Path("/elsewhere/.cci")


def test_each_user_finds_it_in_the_home_it_did_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$HOME`` for the user's files; the password database's home for the host guard's lock (one per user)."""
    import pwd

    from cci_builtin_plugins.images.commands import _log_path
    from cci_builtin_plugins.incus.host_guard import lock_path
    from cci_builtin_plugins.network.resolver import default_cache_path
    from cci_core.config.trust import default_store
    from cci_core.session_store import default_root

    monkeypatch.setenv("HOME", str(tmp_path))
    cci = tmp_path / ".cci"
    assert default_root() == cci
    assert default_store() == cci / "trusted-configs.json"
    assert default_cache_path() == cci / "network" / "addresses.json"
    assert _log_path("demo").parent == cci / "logs"
    database_home = Path(pwd.getpwuid(__import__("os").getuid()).pw_dir)
    assert lock_path(Path("/var/lib/incus/unix.socket"), None).parent == database_home / ".cci" / "run"
