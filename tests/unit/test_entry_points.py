"""The entry-point reader agrees with importlib.metadata and handles the formats pip and setuptools write."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from cci_core.entry_points import find_entry_points


def test_agrees_with_importlib_metadata_on_this_environment() -> None:
    ours = {(ep.name, ep.value) for ep in find_entry_points("console_scripts")}
    theirs = {(ep.name, ep.value) for ep in metadata.entry_points(group="console_scripts")}
    assert ("cci", "cci_core.cli.entry:main") in ours
    assert ours == theirs


def test_distribution_name_and_version_come_from_metadata() -> None:
    ep = next(ep for ep in find_entry_points("console_scripts") if ep.name == "claude-code-isolated")
    assert ep.distribution() == ("claude-code-isolated", metadata.version("claude-code-isolated"))


def write_dist(root: Path, folder: str, entry_points: str, metadata_text: str | None = None) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "entry_points.txt").write_text(entry_points)
    if metadata_text is not None:
        name = "PKG-INFO" if folder.endswith(".egg-info") else "METADATA"
        (root / folder / name).write_text(metadata_text)


def test_parses_attributes_extras_comments_and_other_groups(tmp_path: Path) -> None:
    write_dist(tmp_path, "alpha-1.0.dist-info",
               "# comment\n[console_scripts]\nalpha = alpha:main\n\n[cci]\n; another comment\n"
               "one = alpha.plugin\ntwo = alpha.more:Plugin.instance [extra]\n",
               "Metadata-Version: 2.1\nName: Alpha\nVersion: 1.0\n\nName: not-a-header\n")
    eps = find_entry_points("cci", [str(tmp_path)])
    assert [(ep.name, ep.value) for ep in eps] == [("one", "alpha.plugin"),
                                                   ("two", "alpha.more:Plugin.instance [extra]")]
    assert eps[0].distribution() == ("Alpha", "1.0")


def test_first_distribution_of_a_name_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_dist(first, "my_dist-2.0.dist-info", "[cci]\nx = new_module\n")
    write_dist(second, "My.Dist-1.0.egg-info", "[cci]\nx = old_module\n", "Name: My.Dist\nVersion: 1.0\n")
    eps = find_entry_points("cci", [str(first), str(second), str(tmp_path / "missing")])
    assert [(ep.value, ep.distribution()) for ep in eps] == [("new_module", ("my_dist", "2.0"))]


def test_load_returns_module_or_attribute(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "ep_target_mod.py").write_text("class Plugin:\n    instance = 'the instance'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    write_dist(tmp_path, "t-1.dist-info", "[cci]\na = ep_target_mod\nb = ep_target_mod:Plugin.instance\n")
    a, b = find_entry_points("cci", [str(tmp_path)])
    assert a.load().__name__ == "ep_target_mod"
    assert b.load() == "the instance"
