"""Instance config in cci's terms: disk devices for mounts, and cci's labels among the config keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cci_core.api import LABEL_PREFIX

if TYPE_CHECKING:
    from cci_core.api import Mount


def disk_device(mount: Mount) -> dict[str, str]:
    """The Incus disk device for a mount."""
    device = {"type": "disk", "source": str(mount.source), "path": mount.path}
    if mount.shift:
        device["shift"] = "true"
    if mount.readonly:
        device["readonly"] = "true"
    return device


def labels_of(config: Mapping[str, str]) -> dict[str, str]:
    """cci's labels from an instance config."""
    return {key[len(LABEL_PREFIX):]: value for key, value in config.items() if key.startswith(LABEL_PREFIX)}


def nic_devices(devices: Mapping[str, Mapping[str, Any]], network: str, *, filtering: bool) -> dict[str, dict[str, str]]:
    """Devices that put the container on ``network`` alone: its first NIC moved there, any other NIC removed.

    The NIC is an isolated bridge port: containers on the same network cannot reach
    each other, whether or not the host's firewall sees bridged traffic (the ACL only
    does with ``br_netfilter`` loaded). With ``filtering``, the NIC also drops what the
    container sends from a MAC or IPv4 address that is not its own, so root inside
    cannot pose as another host.
    """
    nics = sorted(name for name, device in devices.items() if device.get("type") == "nic")
    first = nics[0] if nics else "eth0"
    nic = {"type": "nic", "network": network, "name": str(devices.get(first, {}).get("name") or "eth0"),
           "security.port_isolation": "true"}
    if filtering:
        nic.update({"security.mac_filtering": "true", "security.ipv4_filtering": "true"})
    return {first: nic, **{name: {"type": "none"} for name in nics[1:]}}
