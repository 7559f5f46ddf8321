"""``cci doctor``: check that this machine can run cci (see :mod:`cci_core.doctor`)."""

from __future__ import annotations

import click

from cci_core.cli.state import get_state


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def doctor(ctx: click.Context, fmt: str) -> None:
    """Check that this machine can run cci.

    Prints one line per check: its status (ok, warn or fail), its name, what
    was found and, for warn and fail, the fix. The Incus checks come from the
    Incus plugin; another driver plugin brings its own.

    Exit status: 0 when no check failed (warnings allowed), 1 when at least one did.
    """
    from cci_core import doctor as checks_module

    state = get_state(ctx)
    checks = checks_module.run_checks(lambda: state.config, lambda config: state.plugins)
    render = checks_module.render_json if fmt == "json" else checks_module.render_text
    click.echo(render(checks))
    summary = checks_module.summary(checks)
    if summary:
        click.echo(f"cci: {summary}", err=True)
    ctx.exit(checks_module.exit_code(checks))
