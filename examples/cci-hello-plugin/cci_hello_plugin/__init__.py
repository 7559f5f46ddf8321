"""An example cci plugin: adds the ``hello`` tool, the ``cci hello`` command and an environment variable."""

from __future__ import annotations

import click

from cci_core import hookimpl
from cci_core.tool import ToolAdapter

PLUGIN_NAME = "hello"


class HelloTool(ToolAdapter):
    """A stand-in "AI tool" that greets and then runs a shell."""

    name = "hello"
    summary = "prints a greeting, then starts bash"
    default_binary = "bash"
    state_dir = ".hello"

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        verb = "welcome back to" if resume else "starting"
        return [self.binary, "-c", f"echo 'hello: {verb} session {session_id}'; exec bash"]


@click.command()
@click.option("--name", default="world", help="Who to greet.")
def hello(name: str) -> None:
    """Say hello (an example plugin command)."""
    click.echo(f"hello, {name}!")


@hookimpl
def cci_register(register):
    register.add_tool(HelloTool)
    register.add_command(hello)


@hookimpl
def cci_environment(ctx):
    # Per-plugin settings live in the config under [plugins.hello].
    greeting = ctx.plugin_settings(PLUGIN_NAME).get("greeting", "hello")
    return {"HELLO_GREETING": greeting}
