"""``cci config``: show the merged configuration and where each value came from."""

from __future__ import annotations

import click

from cci_core.cli.state import get_state


@click.group()
def config() -> None:
    """Show the merged configuration."""


@config.command()
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml", show_default=True)
@click.pass_context
def show(ctx: click.Context, fmt: str) -> None:
    """Print the merged config with the source of every value."""
    import json

    from cci_core.config.render import render_toml, to_json

    merged = get_state(ctx).config
    click.echo(json.dumps(to_json(merged), indent=2) if fmt == "json" else render_toml(merged), nl=fmt == "json")


@config.command()
@click.pass_context
def path(ctx: click.Context) -> None:
    """List the config files, lowest precedence first, and whether each exists."""
    from cci_core.config import SYSTEM_FILE, WORKSPACE_FILE, user_config_file

    workspace = get_state(ctx).workspace.resolve()
    for label, file in (("system", SYSTEM_FILE), ("user", user_config_file()),
                        ("workspace", workspace / WORKSPACE_FILE)):
        click.echo(f"{label:<10} {file}{'' if file.is_file() else '  (not present)'}")
