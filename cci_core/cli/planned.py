"""Commands of the spec that are not implemented yet: each says so and exits with code 6.

They exist so that ``cci --help`` shows the whole interface; none pretends to work.
"""

from __future__ import annotations

import click

from cci_core.errors import NotImplementedYetError


def planned_command(name: str, summary: str) -> click.Command:
    """A command that accepts any arguments and fails with :class:`NotImplementedYetError`."""

    def refuse(args: tuple[str, ...]) -> None:
        raise NotImplementedYetError(f"'cci {name}' is not implemented yet")

    return click.Command(
        name,
        callback=refuse,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=f"{summary} (not implemented yet)",
        short_help=f"{summary} (not implemented yet)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
