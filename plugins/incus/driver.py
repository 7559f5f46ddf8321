"""The Incus implementation of :class:`cci_core.driver.Driver`, over the REST API with pylxd."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING

from cci_core.driver import Driver, ServerInfo
from cci_builtin_plugins.incus.connection import connect, find_socket

if TYPE_CHECKING:
    import pylxd


class IncusDriver(Driver):
    """Containers on a local Incus daemon, reached through its unix socket."""

    name = "incus"
    summary = "Incus system containers (local unix socket)"

    @cached_property
    def client(self) -> pylxd.Client:
        """The pylxd client, connected on first use."""
        incus = self.config.incus
        return connect(find_socket(incus.socket, os.environ), incus.project, incus.group)

    def server_info(self) -> ServerInfo:
        info = self.client.host_info
        environment = info.get("environment", {})
        return ServerInfo(
            server=environment.get("server", "unknown"),
            version=environment.get("server_version", "unknown"),
            api_version=info.get("api_version", "unknown"),
            details={
                key: str(environment[key])
                for key in ("storage", "storage_version", "kernel_version", "driver")
                if key in environment
            },
        )
