"""An example cci plugin: the ``hello`` tool, the ``cci hello`` command, a ``[hello]`` config section and an
environment variable read from it."""

from __future__ import annotations

from typing import Annotated, NamedTuple

import click

from cci_core.api import Setting, ToolAdapter, current_config, hookimpl, non_empty

PLUGIN_NAME = "hello"


class HelloSettings(NamedTuple):
    """``[hello]``: this plugin's own config section (``CCI_HELLO_GREETING`` works too)."""

    greeting: Annotated[str, Setting("What the hello tool and 'cci hello' say.", check=non_empty)] = "hello"


class HelloTool(ToolAdapter):
    """A stand-in "AI tool" that greets and then runs a shell."""

    name = "hello"
    summary = "prints a greeting, then starts bash"
    default_binary = "bash"
    state_dir = ".hello"

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        verb = "welcome back to" if resume else "starting"
        return [self.binary, "-c", f"echo \"$HELLO_GREETING: {verb} session {session_id}\"; exec bash"]


@click.command()
@click.option("--name", default="world", help="Who to greet.")
def hello(name: str) -> None:
    """Say hello (an example plugin command)."""
    greeting = current_config().section(PLUGIN_NAME).greeting
    click.echo(f"{greeting}, {name}!")


@hookimpl
def cci_register(register):
    register.add_tool(HelloTool)
    register.add_command(hello)
    register.add_settings(PLUGIN_NAME, HelloSettings)


@hookimpl
def cci_environment(ctx):
    return {"HELLO_GREETING": ctx.config.section(PLUGIN_NAME).greeting}
