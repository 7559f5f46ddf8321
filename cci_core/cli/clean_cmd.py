"""``cci clean``: finish stopped sessions and remove orphaned cci containers and stale warm-pool ones."""

from __future__ import annotations

import click

from cci_core.cli.sessions import confirm, manager_for


@click.command()
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Only show what would be cleaned.")
@click.option("--pool", is_flag=True, help="Also delete your warm-pool containers (the next launch that uses a pool "
                                           "fills it again).")
@click.pass_context
def clean(ctx: click.Context, force: bool, dry_run: bool, pool: bool) -> None:
    """Finish stopped sessions (save, delete unless persistent) and delete orphaned cci containers and stale
    warm-pool ones.

    Never touches containers cci did not create, nor saved persistent ones.
    """
    manager = manager_for(ctx)
    plan = manager.cleanup(pool=pool)
    if not plan:
        click.echo("nothing to clean")
        return
    for line in plan.lines():
        click.echo(line)
    if dry_run:
        return
    confirm(f"Clean {len(plan)} container(s)?", force)
    manager.clean(plan)
    click.echo(f"cleaned {len(plan)} container(s)")
