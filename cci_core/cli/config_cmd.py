"""``cci config``: show the merged configuration and where each value came from."""

from __future__ import annotations

import click

from cci_core.cli.state import get_state
from cci_core.errors import ConfigError


@click.group()
def config() -> None:
    """Show the merged configuration, and trust a workspace's .cci.toml."""


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
        state = "" if file.is_file() else "  (not present)"
        if label == "workspace" and file.is_file():
            merged = get_state(ctx).config
            if merged.workspace_digest:
                from cci_core.config.trust import TrustStore

                state = "  (trusted)" if TrustStore().trusts(file, merged.workspace_digest) else "  (not trusted)"
        click.echo(f"{label:<10} {file}{state}")


@config.command()
@click.option("--revoke", is_flag=True, help="Stop trusting it.")
@click.pass_context
def trust(ctx: click.Context, revoke: bool) -> None:
    """Trust this workspace's .cci.toml as it is now (read it first: code in a container can write it)."""
    from cci_core.config.sources import display_path
    from cci_core.config.trust import TrustStore, workspace_file

    merged = get_state(ctx).config  # a malformed file is refused here, before it could be trusted
    file = workspace_file(merged)
    store = TrustStore()
    if revoke:
        click.echo(f"{display_path(file)}: {'no longer trusted' if store.revoke(file) else 'was not trusted'}")
        return
    if not merged.workspace_digest:
        click.echo(f"{display_path(file)} sets nothing: there is nothing to trust")
        return
    from cci_core.config.sources import read_config_file

    # what is trusted is shown in full: the file may have changed since you read it
    read = read_config_file(file)
    if read is None or read.digest() != merged.workspace_digest:
        raise ConfigError(f"{display_path(file)} changed while it was being trusted",
                          hint="read it again, then run 'cci config trust'")
    store.trust(file, merged.workspace_digest)
    click.echo(f"trusted {display_path(file)} as it is now (sha256 {merged.workspace_digest[:12]}); any change "
               "needs 'cci config trust' again. What it sets:")
    from cci_core.terminal_text import printable

    for line in read.raw.decode().splitlines():
        click.echo(f"  {printable(line)}")
