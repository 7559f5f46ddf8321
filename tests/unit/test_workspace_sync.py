"""The pieces of the workspace sync that need no container: ``.gitignore``-style excludes, which names and link
targets a sync back accepts, and the manifest kept between syncs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_core.workspace_sync import Excludes, Record, _clean, _inside, load_manifest, save_manifest


@pytest.mark.parametrize(("pattern", "path", "directory", "excluded"), [
    ("node_modules/", "node_modules", True, True),
    ("node_modules/", "web/node_modules", True, True),
    ("node_modules/", "node_modules", False, False),  # a file of that name: only directories
    ("*.log", "debug.log", False, True),
    ("*.log", "logs/deep/x.log", False, True),
    ("*.log", "debug.log.txt", False, False),
    ("/build/out", "build/out", False, True),
    ("/build/out", "src/build/out", False, False),  # anchored at the root
    ("build/*", "build/x", False, True),
    ("build/*", "build/x/y", False, False),  # * does not cross /
    ("docs/**/*.pdf", "docs/a/b/c.pdf", False, True),
    ("docs/**/*.pdf", "docs/c.pdf", False, True),
    (".git", ".git", True, True),
])
def test_excludes_match_as_gitignore_does(pattern: str, path: str, directory: bool, excluded: bool) -> None:
    assert Excludes([pattern])(path, directory) is excluded


def test_a_sync_back_takes_plain_relative_names_and_links_that_stay_inside() -> None:
    assert _clean("./src/a.py") == "src/a.py" and _clean("src//a.py") == "src/a.py"
    for bad in ("../x", "src/../../x", "/etc/passwd", "src/.cci-sync-1234", "a\0b"):
        assert _clean(bad) is None, bad
    assert _inside("src/link", "../a.txt") and _inside("a/b/link", "../../c")
    for target in ("/etc/passwd", "../../x", "../..", ""):
        assert not _inside("src/link", target), target


def test_the_manifest_round_trips_and_an_unreadable_one_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "sync" / "cci-x-1.json"
    records = {"a.txt": Record("file", "ab" * 32, (3, 17, 99)), "src": Record("directory", ""),
               "l": Record("symlink", "link:a.txt")}
    save_manifest(path, records)
    assert load_manifest(path) == records and oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("{not json")
    assert load_manifest(path) == {}
    assert load_manifest(tmp_path / "missing.json") == {}
