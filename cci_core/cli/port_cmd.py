"""``cci port list|add|remove``: the ports a session container publishes on the host (docs/sessions.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import click

from cci_core.cli.state import get_state, warn
from cci_core.errors import CciError, NotFoundError, UsageError

if TYPE_CHECKING:
    from cci_core.driver import Container, PublishedPort

_T = TypeVar("_T")

def _session(ctx: click.Context, name: str) -> Container:
    """The cci session container ``name`` (running or stopped); any other container is refused."""
    from cci_core.cli.sessions import select

    driver = get_state(ctx).driver
    select(driver.list_containers(), [name], False)
    return driver.get(name)


def _parsed(texts: Sequence[str], parse: Callable[[str], _T], what: str) -> list[_T]:
    """Each of ``texts`` through ``parse``; a bad one is a :class:`UsageError` naming it."""
    from cci_core.ports import BadPort

    parsed = []
    for text in texts:
        try:
            parsed.append(parse(text))
        except BadPort as exc:
            raise UsageError(str(exc), hint=f"write {what}") from None
    return parsed


def _brief_changed(ctx: click.Context, container: Container) -> None:
    """After a change on a running session: the sandbox brief lists the ports as they are now (a failure is a
    warning: the ports are changed all the same)."""
    if container.status() != "running":
        return  # a stopped one gets its brief at its next start
    from cci_core.cli.sessions import manager_for
    from cci_core.sandbox_brief import rewrite_brief

    try:
        rewrite_brief(manager_for(ctx), container)
    except CciError as exc:
        warn(f"the sandbox brief of {container.name} was not rewritten: {exc}")


@click.group()
def port() -> None:
    """Publish ports of a session container on the host: list, add, remove.

    A published port [ADDRESS:]HOST:CONTAINER makes ADDRESS:HOST on the host lead to
    TCP port CONTAINER on the container's own loopback. ADDRESS defaults to [ports]
    address (127.0.0.1: this machine only). The container, running or stopped, keeps
    its ports until they are removed (a persistent one across sessions).
    """


@port.command("list")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def list_(ctx: click.Context, name: str, fmt: str) -> None:
    """Show the ports container NAME publishes: address, host port, container port."""
    from cci_core.ports import as_json, url

    ports = _session(ctx, name).published_ports()
    if fmt == "json":
        import json

        click.echo(json.dumps({"container": name, "ports": [as_json(port) for port in ports]}, indent=2))
        return
    from cci_core.cli.table import print_table

    print_table(["ADDRESS", "HOST", "CONTAINER", "OPEN"],
                [[port.address, str(port.host_port), str(port.container_port), url(port)] for port in ports],
                empty=f"{name} publishes no ports")


@port.command()
@click.argument("name")
@click.argument("specs", nargs=-1, required=True, metavar="[ADDRESS:]HOST:CONTAINER...")
@click.pass_context
def add(ctx: click.Context, name: str, specs: tuple[str, ...]) -> None:
    """Publish ports of container NAME on the host, at once if it runs.

    A host port that is taken, or that NAME publishes already, is refused, and
    nothing is published.
    """
    from functools import partial

    from cci_core.ports import SPEC_FORM, describe, exposure, host_address, parse_port

    ports = _parsed(specs, partial(parse_port, default_address=get_state(ctx).config.ports.address), SPEC_FORM)
    container = _session(ctx, name)
    taken = {port.host_port: port for port in container.published_ports()}
    for port in ports:
        if port.host_port in taken:
            raise UsageError(f"host port {port.host_port} is given twice, or {name} publishes it already "
                             f"({describe(taken[port.host_port])})",
                             hint=f"remove it first: cci port remove {name} {port.host_port}")
        taken[port.host_port] = port
    done: list[PublishedPort] = []
    try:
        for port in ports:
            container.publish_port(port)
            done.append(port)
    except BaseException:
        for port in done:  # nothing half-made
            try:
                container.unpublish_port(port.host_port, port.address)
            except CciError:
                warn(f"could not take {host_address(port)} off {name} again: remove it with "
                     f"'cci port remove {name} {port.host_port}'")
        raise
    for port in ports:
        click.echo(f"{name}: published {describe(port)}")
        exposed = exposure(port)
        if exposed:
            warn(exposed)
    _brief_changed(ctx, container)


@port.command()
@click.argument("name")
@click.argument("choices", nargs=-1, required=True, metavar="[ADDRESS:]HOST[:CONTAINER]...")
@click.pass_context
def remove(ctx: click.Context, name: str, choices: tuple[str, ...]) -> None:
    """Stop publishing ports of container NAME (each named by its host port, with its address and container port
    if you like); a port it does not publish is refused, and nothing is removed."""
    from cci_core.ports import describe, parse_choice

    wanted = _parsed(choices, parse_choice, "HOST, ADDRESS:HOST or [ADDRESS:]HOST:CONTAINER")
    container = _session(ctx, name)
    published = container.published_ports()
    found = []
    for text, choice in zip(choices, wanted):
        port = next((port for port in published if choice.matches(port)), None)
        if port is None:
            raise NotFoundError(f"{name} publishes no port {text}", hint=f"see 'cci port list {name}'")
        found.append(port)
    for port in dict.fromkeys(found):
        container.unpublish_port(port.host_port, port.address)
        click.echo(f"{name}: no longer publishes {describe(port)}")
    _brief_changed(ctx, container)
