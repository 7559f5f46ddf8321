"""The docs name everything a user or plugin author can reach: every hook, built-in plugin, config key and command.

Each list is taken from the code (the hookspecs, the built-in plugin list, the config
schema with the enabled plugins' sections, the click command tree), so a new hook,
plugin, key or command without its line in the docs fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from cci_core import hookspecs
from cci_core.cli.main import cli
from cci_core.plugin_manager import BUILTIN_PLUGINS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _section(text: str, heading: str) -> str:
    """The part of a Markdown text from the heading line ``heading`` to the next heading of the same level."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    rest = text[start + len(heading) + 2:]
    ends = [match.start() for match in re.finditer(rf"^{re.escape(level)} ", rest, re.MULTILINE)]
    return rest[:ends[0]] if ends else rest


def _table_names(text: str) -> set[str]:
    """The backquoted names at the start of each row of the Markdown tables in ``text``."""
    names = set()
    for line in text.splitlines():
        match = re.match(r"\|\s*((?:`[^`]+`(?:,\s*)?)+)\s*\|", line)
        if match:
            names.update(re.findall(r"`([^`]+)`", match.group(1)))
    return names


def test_every_hook_is_in_the_plugin_guide() -> None:
    guide = (DOCS / "plugins.md").read_text()
    hooks = sorted(name for name in dir(hookspecs) if name.startswith("cci_"))
    assert hooks, "no hookspecs found"
    missing = [name for name in hooks if not re.search(rf"`{name}\(", guide)]
    assert not missing, f"hooks not documented in docs/plugins.md (as `name(args)`): {missing}"


def test_every_builtin_plugin_is_in_the_plugin_guide() -> None:
    table = _table_names(_section((DOCS / "plugins.md").read_text(), "## Built-in plugins and their import name"))
    missing = [name for name, _module in BUILTIN_PLUGINS if name not in table]
    assert not missing, f"built-in plugins missing from docs/plugins.md's table: {missing}"


def _commands(group: click.Group, ctx: click.Context, prefix: str) -> list[str]:
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        path = f"{prefix} {name}"
        found.append(path)
        if isinstance(command, click.Group):
            found += _commands(command, click.Context(command, info_name=name, parent=ctx), path)
    return found


def _documented(path: str, rows: list[str]) -> bool:
    """Whether a table row's first cell names the command: ``cci a b``, ``cci a x|b`` or ``cci a x ...` / `b ...``."""
    *parents, last = path.split()
    parent = " ".join(parents)
    for row in rows:
        cell = row.split(" | ", 1)[0].replace("\\|", "|")
        if re.search(rf"`{re.escape(parent)} (?:[\w-]+\|)*{re.escape(last)}\b", cell):
            return True
        if f"`{parent} " in cell and re.search(rf"/ `{re.escape(last)}\b", cell):
            return True
    return False


def test_every_command_is_in_the_cli_reference() -> None:
    ctx = click.Context(cli, info_name="cci")
    ctx.params = {}
    commands = _commands(cli, ctx, "cci")
    assert {"cci shell", "cci container exec", "cci tmux send", "cci build base"} <= set(commands), commands
    rows = [line for line in (DOCS / "cli.md").read_text().splitlines() if line.startswith("| `cci ")]
    missing = [path for path in commands if not _documented(path, rows)]
    assert not missing, f"commands missing from docs/cli.md's tables: {missing}"


@pytest.fixture()
def config_keys() -> dict[str, list[str]]:
    """Every config key, by section: the core's and those of the built-in plugins' sections."""
    from cci_core.config.schema import Schema
    from cci_core.plugin_manager import load_plugins

    keys: dict[str, list[str]] = {}
    for spec in Schema(load_plugins(entry_points=False).registries.config_sections()).settings.values():
        keys.setdefault(spec.section, []).append(spec.name)
    return keys


def test_every_config_key_is_in_the_configuration_reference(config_keys: dict[str, list[str]]) -> None:
    reference = (DOCS / "configuration.md").read_text()
    missing = []
    for section, names in config_keys.items():
        try:
            table = _table_names(_section(reference, f"### `[{section}]`"))
        except ValueError:
            missing.append(f"[{section}] (no section)")
            continue
        missing += [f"{section}.{name}" for name in names if name not in table]
    assert not missing, f"config keys missing from docs/configuration.md: {missing}"


def test_every_test_file_the_code_and_docs_point_to_exists() -> None:
    """A docstring or page that sends the reader to a test (``tests/unit/test_x.py``) names one that exists."""
    root = DOCS.parent
    sources = [*root.glob("cci_core/**/*.py"), *root.glob("plugins/**/*.py"), *root.glob("benchmarks/*.py"),
               *DOCS.glob("*.md"), root / "README.md"]
    missing = [f"{source.relative_to(root)}: {path}" for source in sources
               for path in re.findall(r"\btests/[\w/.-]+\.py\b", source.read_text(encoding="utf-8"))
               if not (root / path).is_file()]
    assert missing == []
