"""The public plugin API (:mod:`cci_core.api`): plugins import only it, every name in it resolves, and it is cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.fake_dists import install_fake_plugin

ROOT = Path(__file__).resolve().parents[2]
#: the folders whose modules are plugins: the built-in ones, the test suite's third-party ones and the example
PLUGIN_FOLDERS = ("plugins", "tests/plugins", "examples")
#: what a plugin may import from the package ``cci_core`` itself (the documented ``from cci_core import hookimpl``)
FROM_PACKAGE = {"hookimpl", "api"}


def plugin_modules() -> Iterator[Path]:
    for folder in PLUGIN_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not {"build", ".eggs"} & set(path.relative_to(ROOT).parts):  # pip's build folder is a copy
                yield path


def internal_imports(path: Path, root: Path = ROOT) -> Iterator[str]:
    """``file:line: module`` for every import of a ``cci_core`` module other than the API, wherever it stands
    (module level, in a function, under ``if TYPE_CHECKING:``)."""
    where = path.relative_to(root)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "cci_core":
                modules = [f"cci_core.{alias.name}" for alias in node.names if alias.name not in FROM_PACKAGE]
            else:
                modules = [node.module]
        else:
            continue
        for module in modules:
            if module.split(".")[0] == "cci_core" and module != "cci_core.api":
                yield f"{where}:{node.lineno}: {module}"


def test_the_scan_finds_imports_of_every_kind(tmp_path: Path) -> None:
    source = tmp_path / "plugin.py"
    source.write_text("from typing import TYPE_CHECKING\nfrom cci_core import hookimpl, errors\n"
                      "from cci_core.api import Driver\nimport cci_core.tool\n"
                      "if TYPE_CHECKING:\n    from cci_core.driver import Container\n"
                      "def later():\n    from cci_core.cli.state import get_state\n")
    assert set(internal_imports(source, tmp_path)) == {
        "plugin.py:2: cci_core.errors", "plugin.py:4: cci_core.tool", "plugin.py:6: cci_core.driver",
        "plugin.py:8: cci_core.cli.state"}


def test_plugins_import_cci_only_through_the_api() -> None:
    found = [line for path in plugin_modules() for line in internal_imports(path)]
    assert not found, "plugins must import from cci_core.api only:\n" + "\n".join(found)


def test_every_name_of_the_api_resolves() -> None:
    from cci_core import api

    missing = []
    for name in api.__all__:
        try:
            getattr(api, name)
        except (AttributeError, ImportError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing
    assert set(api.__all__) <= set(dir(api))
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        api.NoSuchThing  # noqa: B018


def test_the_api_names_each_export_in_its_three_lists() -> None:
    """``__all__`` (for ``import *`` and the docs), the lazy table (run time) and the ``TYPE_CHECKING`` imports
    (type checkers) hold the same names; a name in one only would fail to resolve or to type-check."""
    from cci_core import api

    tree = ast.parse((ROOT / "cci_core" / "api.py").read_text(encoding="utf-8"))
    for_type_checkers = {alias.asname or alias.name
                         for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                         for statement in node.body
                         if isinstance(statement, ast.ImportFrom) and statement.module.startswith("cci_core")
                         for alias in statement.names}
    defined_here = {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}
    assert len(api.__all__) == len(set(api.__all__))
    assert set(api.__all__) == set(api._LAZY) | defined_here
    assert for_type_checkers == set(api._LAZY) | {"AppState"}  # AppState: for the annotations of this module


def test_importing_the_api_imports_no_other_module_of_cci() -> None:
    code = "import sys, cci_core.api; print(' '.join(sorted(m for m in sys.modules if m.startswith('cci_'))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["cci_core", "cci_core.api"]


PROBE_PLUGIN = """
    import click
    from cci_core.api import current_config, current_driver, current_plugins, hookimpl

    @click.command()
    def probe():
        click.echo(f"{current_config().defaults.image} {type(current_driver()).__name__} "
                   f"{'probe' in current_plugins().registries.commands.names()}")

    @hookimpl
    def cci_register(register):
        register.add_command(probe)
"""


def test_a_plugin_command_reaches_the_invocations_config_plugins_and_driver(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.cli.main import cli

    install_fake_plugin(tmp_path / "site", monkeypatch, plugin="probe", module="fake_probe_plugin",
                        source=PROBE_PLUGIN)
    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "--image", "probe-image", "probe"])
    assert (result.exit_code, result.output) == (0, "probe-image IncusDriver True\n")


@pytest.mark.parametrize("name", ["current_config", "current_plugins", "current_driver"])
def test_the_current_invocation_outside_a_cci_command_is_a_clear_error(name: str) -> None:
    import click

    from cci_core import api

    with pytest.raises(RuntimeError, match=f"{name}\\(\\) works only while a cci command runs"):
        getattr(api, name)()
    with click.Context(click.Command("other")), pytest.raises(RuntimeError, match="works only while a cci command"):
        getattr(api, name)()


def test_the_docs_list_every_name_of_the_api() -> None:
    import re

    from cci_core import api
    from tests.unit.test_docs_complete import DOCS, _section

    section = _section((DOCS / "plugins.md").read_text(), "## The plugin API")
    listed = {name for row in re.findall(r"^\|[^|]*\|(.*)\|$", section, re.MULTILINE) for name in re.findall(r"`([^`]+)`", row)}
    assert listed == set(api.__all__)


def test_the_hook_marker_is_still_importable_from_the_package() -> None:
    import cci_core
    from cci_core import api

    assert cci_core.hookimpl is api.hookimpl
