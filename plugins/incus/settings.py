"""The ``[incus]`` config section: the Incus plugin's own settings (declared in :mod:`.plugin`).

Read it with :meth:`IncusSettings.of`. No ``from __future__ import annotations`` here:
the keys' ``Annotated`` hints must be real objects (see :mod:`cci_core.config.schema`).
"""

from typing import TYPE_CHECKING, Annotated, NamedTuple

from cci_core.api import Setting, https_url, non_empty, non_negative

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cci_core.api import Config

#: the section's name: ``[incus]`` and ``CCI_INCUS_*``
SECTION = "incus"


def subnet_pool(value: str) -> str | None:
    """Accept ``auto`` or an IPv4 network of /24 or larger."""
    if value == "auto":
        return None
    import ipaddress

    try:
        network = ipaddress.IPv4Network(value)
    except ValueError:
        return f"must be 'auto' or an IPv4 range such as 10.150.0.0/16, got {value!r}"
    return None if network.prefixlen <= 24 else f"must be a /24 or larger range, got /{network.prefixlen}"


class IncusSettings(NamedTuple):
    """``[incus]``: how cci talks to the Incus daemon."""

    project: Annotated[str, Setting("Incus project holding cci containers.", check=non_empty)] = "default"
    group: Annotated[str, Setting("Host group allowed to use Incus.", check=non_empty)] = "incus-admin"
    container_uid: Annotated[
        int, Setting("UID of the tool user inside the container.", check=non_negative, aliases=("claude_uid",))
    ] = 1000
    socket: Annotated[str | None, Setting("Path of the Incus unix socket (default: auto-detect).")] = None
    remote: Annotated[
        str | None, Setting("A remote of the incus CLI ('incus remote add') to use, by name (local: this host's).")
    ] = None
    url: Annotated[str | None, Setting("HTTPS endpoint of a remote Incus, e.g. https://host:8443 (remote wins).",
                                                    check=https_url)] = None
    client_cert: Annotated[str | None, Setting("Client certificate (PEM) for a remote Incus.")] = None
    client_key: Annotated[str | None, Setting("Client key (PEM) for a remote Incus.")] = None
    server_cert: Annotated[str | None, Setting("The server's certificate (PEM), trusted as it is (pinned); default: "
                                                            "the system CAs and the host name.")] = None
    network_nat: Annotated[
        bool, Setting("Masquerade the traffic of the networks cci makes for network policies.")
    ] = True
    network_subnets: Annotated[
        str, Setting("Where those networks take their IPv4 /24s: auto (Incus picks), or a range like 10.150.0.0/16.",
                     check=subnet_pool)
    ] = "auto"
    network_filtering: Annotated[
        bool, Setting("Drop what a container sends from a MAC or IPv4 address not its own (anti-spoofing).")
    ] = True

    @property
    def claude_uid(self) -> int:
        """``container_uid`` under the spec's name (plugins written before the tool-neutral name read it)."""
        return self.container_uid

    @classmethod
    def of(cls, config: "Config") -> "IncusSettings":
        """The merged ``[incus]`` section of ``config`` (an error if the Incus plugin is not enabled)."""
        settings: IncusSettings = config.section(SECTION)
        if settings.remote:
            settings = settings.with_remote(project_set=config.source_of(f"{SECTION}.project") != "default")
        return settings

    def with_remote(self, *, project_set: bool, environ: "Mapping[str, str] | None" = None) -> "IncusSettings":
        """These settings with ``remote`` (a remote of the incus CLI) in place of ``url``, the certificates and the
        socket, and its project unless ``project`` was set."""
        import os

        from cci_builtin_plugins.incus.remotes import find_remote

        remote = find_remote(self.remote or "", os.environ if environ is None else environ)
        return self._replace(url=remote.url, client_cert=remote.client_cert, client_key=remote.client_key,
                             server_cert=remote.server_cert, socket=remote.socket or self.socket,
                             project=self.project if project_set or not remote.project else remote.project)
