"""``cci run``: a command in a fresh container with the workspace mounted, or the tool headless with a prompt; its
exit code is cci's."""

from __future__ import annotations

import sys

import click

from cci_core.cli.command_io import command_io, tty_option
from cci_core.cli.options import LATEST_SESSION, GlobalOptions, with_global_options
from cci_core.cli.sessions import check_network_policy, manager_for
from cci_core.cli.signals import interruptible
from cci_core.cli.streams import binary_writer
from cci_core.cli.state import get_state
from cci_core.errors import UsageError


@with_global_options(hide=("persistent",), helps={
    "slot": "The slot of the run's container (default: the lowest free one); a slot in use is an error.",
    "resume": "With --prompt: continue a saved session headless (omit the id for this workspace's latest).",
    "continue_": "Alias for --resume.",
})
@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--prompt", metavar="TEXT", help="Run the tool headless with this prompt (instead of COMMAND).")
@click.option("--prompt-file", metavar="FILE",
              help="Run the tool headless with the prompt in FILE ('-': standard input; at most 1 MiB).")
@click.option("--format", "format_", type=click.Choice(["text", "json"]), default=None,
              help="With a prompt: json for the tool's structured output (stdout holds nothing else).")
@tty_option
@click.option("--wait/--no-wait", default=None,
              help="Wait until the container is ready (booted, its network up) before the command, or start it at "
                   "once. Default: [readiness] wait (true).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, command: tuple[str, ...], prompt: str | None, prompt_file: str | None,
        format_: str | None, tty: bool | None, wait: bool | None, **flags: object) -> None:
    """Run COMMAND in a fresh container with the workspace at /workspace, and exit with its exit code.

    The command runs as the container user (uid [incus] container_uid) in
    /workspace, with only the variables named in the config or with --env.
    Standard input goes to the command as it reads (its end is the command's
    end of file); output is streamed, stdout and stderr apart. From a terminal
    (input and output both), the command runs on one, as with incus exec or
    ssh. Ctrl+C, SIGTERM and SIGHUP go to the command; a third one ends the
    container. The container is deleted afterwards in every case.
    The command starts once the container is ready: booted, and its network
    up (an IPv4 address and a default route); --no-wait starts it at once.
    Put -- before a command that has options of its own: cci run -- ls -la

    With --prompt or --prompt-file, the configured tool runs headless instead,
    the prompt on its standard input, credentials injected as for 'cci shell';
    the session is saved afterwards ('cci shell --resume=ID' continues it), and
    --resume/--continue continue a saved session headless.
    """
    from cci_core.session import LaunchRequest
    from cci_core.session_readiness import Readiness

    state = get_state(ctx)
    state.add_options(GlobalOptions.from_params(flags))
    options = state.options
    headless = prompt is not None or prompt_file is not None
    if headless and command:
        raise UsageError("give a COMMAND or a prompt, not both")
    if not headless and not command:
        raise UsageError("give a COMMAND to run, or --prompt/--prompt-file for the tool",
                         hint="'cci run -- CMD...', or 'cci run --prompt TEXT'")
    if command and command[0].startswith("-"):  # (an option of nobody's: no command begins with -)
        raise UsageError(f"no such option: {command[0]}", hint="see 'cci run --help'")
    if format_ is not None and not headless:
        raise UsageError("--format applies to a prompt only (a COMMAND's output is its own)")
    if tty is not None and headless:
        raise UsageError("--tty and --no-tty apply to a COMMAND only (the tool runs headless without a terminal)")
    refused = (("--persistent", options.persistent),) if headless else (
        ("--resume", options.resume), ("--continue", options.continue_), ("--persistent", options.persistent))
    for flag, value in refused:
        if value:
            raise UsageError(f"{flag} does not apply to 'cci run' (it always uses a fresh container)")
    wanted = options.resume or options.continue_
    if wanted and wanted != LATEST_SESSION:
        from cci_core.session_store import validate_id

        validate_id(wanted)
    if headless:
        from cci_core.session_headless import Prompt, read_prompt

        text = read_prompt(prompt, prompt_file, sys.stdin.buffer)
    check_network_policy(ctx)
    manager = manager_for(ctx)
    wait = state.config.readiness.wait if wait is None else wait
    request = LaunchRequest(state.config.workspace, slot=options.slot, storage=options.storage,
                            readiness=Readiness.REQUIRED if wait else Readiness.SKIPPED)
    out, err = binary_writer(sys.stdout), binary_writer(sys.stderr)
    with interruptible():
        if headless:
            code = manager.run_prompt(request._replace(resume_from=wanted if wanted != LATEST_SESSION else None),
                                      Prompt(text, structured=format_ == "json"), latest=wanted == LATEST_SESSION,
                                      stdout=out, stderr=err, say=_say)
        else:
            code = manager.run(request, command, say=_say, io=command_io(tty, out, err))
    ctx.exit(code)


def _say(line: str) -> None:
    click.echo(line, err=True)
