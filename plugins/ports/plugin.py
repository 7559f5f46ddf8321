"""Published ports (docs/sessions.md#published-ports): the ports ``[ports] publish`` and ``--port`` name are
published on the container before each start (a launch, a reuse), under every network policy; the sandbox
brief tells the agent which ports the user can open and how to ask for another.

A host port the container publishes already is published again as configured now (a reused container keeps
the ports ``cci port add`` gave it). A port bound beyond the loopback is said once on stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cci_core.api import hookimpl

if TYPE_CHECKING:
    from cci_core.api import Container, LaunchContext


@hookimpl
def cci_pre_start(ctx: LaunchContext, container: Container) -> None:
    """Publish the configured ports (a taken host port stops the start: nothing is left half-made)."""
    from cci_core.api import configured_ports, port_exposure, warn

    for port in configured_ports(ctx.config):
        container.publish_port(port)
        exposed = port_exposure(port)
        if exposed:
            warn(exposed)


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
