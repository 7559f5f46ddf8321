"""``cci plugins``: what plugins are installed, what they provide, and whether they are enabled."""

from __future__ import annotations

import click

from cci_core.cli.state import get_state
from cci_core.cli.table import print_table


@click.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def list_plugins(ctx: click.Context, fmt: str) -> None:
    """List built-in and third-party plugins."""
    infos = get_state(ctx).plugins.infos
    if fmt == "json":
        import json

        rows = [
            {"name": i.name, "kind": i.kind, "distribution": i.distribution, "version": i.version,
             "enabled": i.enabled, "builtin": i.builtin, "module": i.module, "hooks": list(i.hooks),
             "provides": list(i.provides)}
            for i in infos
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    print_table(["NAME", "KIND", "DISTRIBUTION", "VERSION", "ENABLED"],
                [[i.name, i.kind, i.distribution, i.version, "yes" if i.enabled else "no"] for i in infos])
