"""``[limits]`` on an Incus instance: ``limits.cpu``, ``limits.memory``, ``limits.processes``, and the ``size`` of
the instance's own ``root`` disk device (an override of its profile's, on the same pool).

Applied in one update while the container is stopped, at each start by cci (a launch, or a
saved persistent container started again): a limit set to ``""`` (or processes 0) is taken
off again. What each pool driver makes of ``size``: btrfs a quota on what the root refers to
(the image's files included), zfs and lvm a quota or a volume of that size, ``dir`` only on a
file system with project quotas (else Incus ignores it); see docs/sessions.md, *Limits*.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cci_core.api import format_size, parse_size

#: the instance config keys cci sets from ``[limits]``
KEYS = ("limits.cpu", "limits.memory", "limits.processes")
#: the root disk device
ROOT = "root"


def instance_limits(limits: Any) -> dict[str, str]:
    """The instance config ``limits`` (a ``LimitsConfig``) asks for; ``""``: the key is removed."""
    memory = limits.memory if not limits.memory or limits.memory.endswith("%") else str(parse_size(limits.memory))
    return {"limits.cpu": limits.cpu, "limits.memory": memory,
            "limits.processes": str(limits.processes) if limits.processes else ""}


def root_size(limits: Any) -> str:
    """The root disk's ``size`` in bytes (``""``: the pool's default)."""
    return str(parse_size(limits.disk)) if limits.disk else ""


def edit_limits(body: dict[str, Any], expanded: Mapping[str, Mapping[str, Any]], limits: Any,
                notes: list[str] | None = None) -> bool:
    """Put ``limits`` into an instance's writable fields ``body`` (its own devices; ``expanded``: with its
    profiles'); False when they are there already.

    A root disk is never made smaller than it is (``notes`` says so): below what it holds, btrfs
    leaves Incus unable to write the container's own configuration, and it could not start again.
    """
    before = (dict(body.get("config") or {}), dict(body.get("devices") or {}))
    config = {key: value for key, value in before[0].items() if key not in KEYS}
    config.update({key: value for key, value in instance_limits(limits).items() if value})
    devices = dict(before[1])
    size = root_size(limits)
    root = dict(devices.get(ROOT) or {})
    current = _bytes(root.get("size", ""))
    if size and current is not None and int(size) < current:
        if notes is not None:
            notes.append(f"its root disk stays at {format_size(current)}: a disk is never made smaller "
                         f"(disk = {limits.disk!r}); start a new session for a smaller one")
    elif size:
        devices[ROOT] = {**(root or expanded.get(ROOT) or {"type": "disk", "path": "/"}), "size": size}
    elif "size" in root:
        devices[ROOT] = {key: value for key, value in root.items() if key != "size"}
    body["config"], body["devices"] = config, devices
    return (config, devices) != before


def _bytes(size: str) -> int | None:
    """A device's ``size`` in bytes (None: none, or one cci cannot read)."""
    try:
        return parse_size(size) if size else None
    except ValueError:
        return None
