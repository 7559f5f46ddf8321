"""``cci completion SHELL``: print the shell-completion script."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  eval "$(cci completion bash)"    (e.g. in ~/.bashrc)
    zsh:   eval "$(cci completion zsh)"     (e.g. in ~/.zshrc)
    fish:  cci completion fish > ~/.config/fish/completions/cci.fish
    """
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    assert completer is not None  # every name in SHELLS is built into click
    root = ctx.find_root().command
    click.echo(completer(root, {}, "cci", "_CCI_COMPLETE").source())
