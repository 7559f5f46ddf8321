"""Plain-text tables for command output."""

from __future__ import annotations

from collections.abc import Sequence

import click


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, empty: str | None = None) -> None:
    """Print left-aligned columns under ``headers``; ``empty`` is printed instead when there are no rows."""
    if not rows and empty is not None:
        click.echo(empty)
        return
    table = [list(headers), *map(list, rows)]
    widths = [max(len(row[column]) for row in table) for column in range(len(headers))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
