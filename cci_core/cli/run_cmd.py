"""``cci run``: a command in a fresh container with the workspace mounted; its exit code is cci's."""

from __future__ import annotations

import sys

import click

from cci_core.cli.options import GlobalOptions, with_global_options
from cci_core.cli.sessions import check_network_policy, manager_for
from cci_core.cli.signals import interruptible
from cci_core.cli.streams import binary_writer
from cci_core.cli.state import get_state
from cci_core.errors import UsageError


@with_global_options
@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, command: tuple[str, ...], **flags: object) -> None:
    """Run COMMAND in a fresh container with the workspace at /workspace, and exit with its exit code.

    The command runs as the container user (uid [incus] container_uid) in
    /workspace, with only the variables named in the config or with --env.
    Output is streamed. The container is deleted afterwards, even on Ctrl+C.
    Put -- before a command that has options of its own: cci run -- ls -la
    """
    from cci_core.session import LaunchRequest

    state = get_state(ctx)
    state.add_options(GlobalOptions.from_params(flags))
    options = state.options
    for flag, value in (("--resume", options.resume), ("--continue", options.continue_),
                        ("--persistent", options.persistent)):
        if value:
            raise UsageError(f"{flag} does not apply to 'cci run' (it always uses a fresh container)")
    check_network_policy(ctx)
    manager = manager_for(ctx)
    with interruptible():
        code = manager.run(LaunchRequest(state.config.workspace, slot=options.slot, storage=options.storage), command,
                           stdout=binary_writer(sys.stdout), stderr=binary_writer(sys.stderr))
    ctx.exit(code)
