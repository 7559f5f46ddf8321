"""Published ports (docs/sessions.md#published-ports): the ports ``[ports] publish`` and ``--port`` name are
published on the container before each start (a launch, a reuse), under every network policy; the sandbox
brief tells the agent which ports the user can open and how to ask for another.

A host port the container publishes already is published again as configured now (a reused container keeps
the ports ``cci port add`` gave it). A port bound beyond the loopback is said once on stderr.

A host port another cci container publishes (a parallel session of the workspace, a ``cci run``) is left out of
this session with a warning naming that container, unless this command line named it (``--port``); a port held
by anything else stops the start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cci_core.api import hookimpl

if TYPE_CHECKING:
    from cci_core.api import Container, LaunchContext, PublishedPort


@hookimpl
def cci_pre_start(ctx: LaunchContext, container: Container) -> None:
    """Publish the configured ports and check the ones the container keeps (a taken host port stops the start,
    nothing left half-made, but for one another cci container publishes that this command line did not name)."""
    from cci_core.api import command_line_ports, configured_ports, port_exposure, warn

    configured = configured_ports(ctx.config)
    named = {port.host_port for port in command_line_ports(ctx.config)}
    configured_hosts = {port.host_port for port in configured}
    kept = [port for port in container.published_ports() if port.host_port not in configured_hosts]
    for port in [*configured, *kept]:
        if not _publish(ctx, container, port, named):
            continue
        exposed = port_exposure(port) if port in configured else None
        if exposed:
            warn(exposed)


def _publish(ctx: LaunchContext, container: Container, port: PublishedPort, named: set[int]) -> bool:
    """Publish ``port``; False (said, and taken off the container) when another cci container publishes it and
    this command line did not name it."""
    from cci_core.api import PortInUse, port_host_address, warn

    try:
        container.publish_port(port)
    except PortInUse as exc:
        if exc.holder is None or port.host_port in named:
            raise
        container.unpublish_port(port.host_port)
        spec = f"{port_host_address(port)}:{port.container_port}"
        warn(f"{port_host_address(port)} is not published for this session: {exc.holder} publishes it (once it is "
             f"free, 'cci port add {ctx.container_name} {spec}' publishes it here)")
        return False
    return True


@hookimpl
def cci_sandbox_brief(ctx: LaunchContext, container: Container) -> list[str]:
    """The ports the user can open, and how the agent asks for another."""
    from cci_core.api import port_url

    ask = (f"To have another port published, ask the user to run `cci port add {ctx.container_name} "
           "HOST:CONTAINER` on their machine (HOST: a free port there; CONTAINER: the port your server listens on).")
    ports = container.published_ports()
    if not ports:
        return ["Published ports: none. A server you start in this container cannot be opened from the user's "
                "machine.", ask]
    lines = [f"- container port {port.container_port}: the user opens {port_url(port)}" for port in ports]
    return ["Published ports: the user reaches these servers from their machine, if they listen in this container "
            "on 127.0.0.1 (or 0.0.0.0) over TCP, on the port named:\n" + "\n".join(lines), ask]
