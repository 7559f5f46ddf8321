"""``cci image``: list, publish, delete, check and clean up images, through the driver interface.

The selection rules (which images are cci's, what ``cleanup`` deletes) are pure
functions of :class:`~cci_core.driver.ImageInfo` values, tested without a backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from cci_core.cli.container_cmd import check_name
from cci_core.cli.state import get_state
from cci_core.cli.table import print_table
from cci_core.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from datetime import datetime

    from cci_core.driver import Driver, ImageInfo

#: the alias of cci's default image; an image it points to is a cci image and is never cleaned up
CCI_ALIAS = "cci"
#: an alias starting with this also makes an image a cci image (see :func:`is_cci_alias`)
CCI_ALIAS_PREFIX = CCI_ALIAS + "-"

#: fingerprint characters shown in tables, and the fewest that name an image by fingerprint
SHORT_FINGERPRINT = 12


class CleanupPlan(NamedTuple):
    """What ``cci image cleanup`` does, newest first: images to delete, and images kept with the reason."""

    delete: tuple[ImageInfo, ...]
    keep: tuple[tuple[ImageInfo, str], ...]


def is_cci_alias(alias: str) -> bool:
    """Whether ``alias`` makes its image a cci image: it is ``cci`` or starts with ``cci-``."""
    return alias == CCI_ALIAS or alias.startswith(CCI_ALIAS_PREFIX)


def has_alias_starting_with(image: ImageInfo, prefix: str) -> bool:
    """Whether one of the image's aliases starts with ``prefix``."""
    return any(alias.startswith(prefix) for alias in image.aliases)


def created_at(image: ImageInfo) -> datetime | None:
    """The image's creation time (timezone-aware), or None when unknown or unparsable.

    Accepts what backends write: a ``Z`` suffix, any number of fractional digits
    (Incus gives nanoseconds), and Go's zero time, which means unknown.
    """
    from datetime import datetime, timezone

    text = image.created.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    head, dot, tail = text.partition(".")
    if dot:  # datetime.fromisoformat (Python 3.10) wants exactly 6 fractional digits
        digits = len(tail) - len(tail.lstrip("0123456789"))
        tail = tail[:min(digits, 6)].ljust(6, "0") + tail[digits:]
    try:
        value = datetime.fromisoformat(head + dot + tail)
    except ValueError:
        return None
    if value.year <= 1:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def newest_first(images: Iterable[ImageInfo]) -> list[ImageInfo]:
    """``images`` sorted by creation time, newest first; unknown times last, ties by fingerprint."""
    def key(image: ImageInfo) -> tuple[bool, float, str]:
        when = created_at(image)
        return (when is not None, when.timestamp() if when else 0.0, image.fingerprint)

    return sorted(images, key=key, reverse=True)


def select_images(images: Iterable[ImageInfo], *, everything: bool = False,
                  prefix: str | None = None) -> list[ImageInfo]:
    """The images ``cci image list`` shows, newest first, each with its aliases sorted (the backend may
    return them in any order).

    With ``prefix``: those having an alias that starts with it (among all images);
    else with ``everything``: all; else cci images (:func:`is_cci_alias`).
    """
    if prefix is not None:
        chosen = newest_first(image for image in images if has_alias_starting_with(image, prefix))
    else:
        chosen = newest_first(image for image in images if everything or any(map(is_cci_alias, image.aliases)))
    return [image._replace(aliases=tuple(sorted(image.aliases))) for image in chosen]


def plan_cleanup(images: Iterable[ImageInfo], prefix: str, keep: int) -> CleanupPlan:
    """Among the images with an alias starting with ``prefix``, keep the ``keep`` newest; delete the others.

    Never deleted, whatever their age: an image created at the same instant as
    the ``keep``-th newest (ties are all kept), one the alias ``cci`` points to,
    one with an alias not starting with ``prefix`` (it is in use under another
    name), and one whose creation time is unknown. Protected images still count
    in the ranking: ``keep`` is about age, protection only vetoes a deletion.
    """
    if keep < 0:
        raise ValueError(f"keep must be 0 or more, not {keep}")
    candidates = newest_first(image for image in images if has_alias_starting_with(image, prefix))
    known = [when for when in map(created_at, candidates) if when is not None]
    delete: list[ImageInfo] = []
    kept: list[tuple[ImageInfo, str]] = []
    for image in candidates:
        when = created_at(image)
        others = [alias for alias in image.aliases if not alias.startswith(prefix)]
        if when is None:
            kept.append((image, "unknown creation time"))
        elif keep and (keep >= len(known) or when >= known[keep - 1]):
            kept.append((image, "the newest" if keep == 1 else f"one of the {keep} newest"))
        elif CCI_ALIAS in image.aliases:
            kept.append((image, f"the alias {CCI_ALIAS!r} points to it"))
        elif others:
            kept.append((image, f"also aliased {', '.join(others)}"))
        else:
            delete.append(image)
    return CleanupPlan(tuple(delete), tuple(kept))


def human_size(size: int) -> str:
    """``size`` bytes in binary units: ``512 B``, ``1.5 KiB``, ``67.7 MiB``..."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def tool_versions(image: ImageInfo) -> dict[str, str]:
    """The tools the image carries and their versions, from its ``cci.tool.<name>.version`` properties."""
    from cci_core.tool import tool_version_property

    found = {}
    for key, value in image.properties.items():
        name = key[len("cci.tool."):-len(".version")] if key.startswith("cci.tool.") else ""
        if name and key == tool_version_property(name):
            found[name] = value
    return dict(sorted(found.items()))


def _tools_cell(image: ImageInfo) -> str:
    return ", ".join(f"{name} {version}" for name, version in tool_versions(image).items()) or "-"


def _when(image: ImageInfo) -> str:
    """The creation time for people: UTC to the second, or what the backend said."""
    from datetime import timezone

    when = created_at(image)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if when else image.created or "-"


def _describe(image: ImageInfo) -> str:
    aliases = ", ".join(image.aliases) or "(no alias)"
    return f"{aliases} ({image.fingerprint[:SHORT_FINGERPRINT]}, created {_when(image)})"


def _check_alias(driver: Driver, value: str, what: str = "image alias") -> None:
    """Raise a :class:`UsageError` unless the driver accepts ``value`` as an image alias."""
    problem = driver.check_image_alias(value)
    if problem:
        raise UsageError(f"invalid {what} {value!r}", hint=problem)


def _is_fingerprint_prefix(value: str) -> bool:
    return len(value) >= SHORT_FINGERPRINT and all(char in "0123456789abcdef" for char in value.lower())


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@click.group("image")
def image() -> None:
    """Manage images: list, publish a container, delete, check an alias, clean up old versions."""


@image.command("list")
@click.option("--all", "everything", is_flag=True, help="List every image, not only cci images.")
@click.option("--prefix", metavar="PREFIX",
              help="Only images with an alias starting with PREFIX, among all images (with or without --all).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def list_(ctx: click.Context, everything: bool, prefix: str | None, fmt: str) -> None:
    """List images, newest first.

    By default only cci images: those with an alias that is 'cci' or starts
    with 'cci-'. --all lists every image; --prefix lists the images, cci's or
    not, with an alias starting with PREFIX.

    \b
    --format json prints a list of objects; fields are only ever added:
      fingerprint  the full fingerprint (sha256, hex)
      aliases      the alias names, a list (empty for an unaliased image)
      description  the image's description ("" when none)
      created      creation time, ISO 8601, as the backend reports it
      size         size in bytes, an integer
      tools        the tools built in and their versions, e.g. {"claude": "2.1.332"}
                   (from the image properties cci.tool.<name>.version; {} when none)
    """
    if prefix == "":
        raise UsageError("--prefix must not be empty", hint="omit it, or use --all to list every image")
    images = select_images(get_state(ctx).driver.list_images(), everything=everything, prefix=prefix)
    if fmt == "json":
        import json

        records: list[dict[str, Any]] = [
            {"fingerprint": image.fingerprint, "aliases": list(image.aliases), "description": image.description,
             "created": image.created, "size": image.size, "tools": tool_versions(image)}
            for image in images
        ]
        click.echo(json.dumps(records, indent=2))
        return
    if prefix is not None:
        empty = f"no image has an alias starting with {prefix!r}"
    else:
        empty = "no images" if everything else "no cci images (--all lists every image)"
    print_table(["ALIASES", "FINGERPRINT", "DESCRIPTION", "TOOL", "CREATED", "SIZE"],
                [[", ".join(image.aliases) or "-", image.fingerprint[:SHORT_FINGERPRINT], image.description or "-",
                  _tools_cell(image), _when(image), human_size(image.size)] for image in images],
                empty=empty)


@image.command()
@click.argument("container")
@click.argument("alias")
@click.option("--description", default="", help="Description stored with the image.")
@click.pass_context
def publish(ctx: click.Context, container: str, alias: str, description: str) -> None:
    """Publish the stopped CONTAINER as an image named ALIAS.

    If ALIAS already names an image, the alias moves to the new image; the old
    image is kept, without it (the output says which). Prints the alias and the
    new image's fingerprint.
    """
    driver = get_state(ctx).driver
    check_name(driver, container)
    _check_alias(driver, alias)
    status = driver.get(container).status()
    if status != "stopped":
        raise UsageError(f"container {container} is {status}: only a stopped container can be published",
                         hint=f"stop it first with 'cci container stop {container}'")
    previous = next((found for found in driver.list_images() if alias in found.aliases), None)
    published = driver.publish(container, alias, description=description)
    click.echo(f"published {container} as {alias}: {published.fingerprint}")
    if previous is not None and previous.fingerprint != published.fingerprint:
        short = previous.fingerprint[:SHORT_FINGERPRINT]
        click.echo(f"the alias {alias} moved from image {short}, which is kept ('cci image delete {short}' deletes it)")


@image.command()
@click.argument("name", metavar="ALIAS_OR_FINGERPRINT")
@click.pass_context
def delete(ctx: click.Context, name: str) -> None:
    """Delete an image, with all its aliases.

    Name it by an alias, or by its fingerprint or at least its first 12
    characters (as 'cci image list' shows them).
    """
    driver = get_state(ctx).driver
    _check_alias(driver, name, "image alias or fingerprint")
    if not driver.image_exists(name):
        if not _is_fingerprint_prefix(name):
            raise NotFoundError(f"no image alias {name!r}",
                                hint=f"name an image by alias or by at least {SHORT_FINGERPRINT} characters of its "
                                     "fingerprint; see 'cci image list --all'")
        name = name.lower()
    driver.delete_image(name)
    click.echo(f"deleted image {name}")


@image.command()
@click.argument("alias")
@click.pass_context
def exists(ctx: click.Context, alias: str) -> None:
    """Exit 0 if the image alias ALIAS exists, 1 if not; print nothing.

    Other failures keep their usual exit codes (4 when the backend is unreachable).
    """
    driver = get_state(ctx).driver
    _check_alias(driver, alias)
    if not driver.image_exists(alias):
        ctx.exit(1)


@image.command()
@click.argument("prefix")
@click.option("--keep", type=click.IntRange(min=0), required=True, metavar="N",
              help="How many of the newest images to keep.")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@click.pass_context
def cleanup(ctx: click.Context, prefix: str, keep: int, dry_run: bool) -> None:
    """Delete old versions of an image, keeping the N newest.

    The versions are the images with an alias starting with PREFIX; the N
    newest, by creation time, are kept and the others deleted. Never deleted:
    the image the alias 'cci' points to; an image that also has an alias not
    starting with PREFIX (it is in use under another name); images created at
    the same instant as the N-th newest (ties are all kept). Prints why each
    image is kept, and each image deleted (or, with --dry-run, that would be).
    """
    if not prefix:
        raise UsageError("the prefix must not be empty: it would select every image")
    driver = get_state(ctx).driver
    plan = plan_cleanup(driver.list_images(), prefix, keep)
    if not plan.delete and not plan.keep:
        click.echo(f"no image has an alias starting with {prefix!r}")
        return
    for kept, reason in plan.keep:
        click.echo(f"keep {_describe(kept)}: {reason}")
    for old in plan.delete:
        if not dry_run:
            driver.delete_image(old.fingerprint)
        click.echo(f"{'would delete' if dry_run else 'deleted'} {_describe(old)}")
    deleted = _plural(len(plan.delete), "image")
    click.echo(f"would delete {deleted}, keep {len(plan.keep)} (dry run: nothing was deleted)" if dry_run
               else f"deleted {deleted}, kept {len(plan.keep)}")
