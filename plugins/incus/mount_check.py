"""After a start: did every host mount come from the place its device's source names?

Incus follows links when it mounts a device's ``source``. A source the
container can reach (inside the workspace, inside another session's) can be
swapped for a link to any directory of the user's between cci's check and the
mount. So after each start, the container's own mount table (read on the host,
from ``/proc/<init pid>/mountinfo``, which anyone may read) must show:

- each disk device mounted from the filesystem and the path that the host's own
  mount table gives for its source: a mount's root field is the path of what it
  mounts inside its filesystem, so a mount that followed a link shows the link's
  target there (:func:`misplaced`);
- each nested device mounted from its parent's filesystem at the same relative
  place (:func:`mismatches`).

Anything else stops the container before cci runs anything in it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any, NamedTuple


class MountEntry(NamedTuple):
    """One line of a mountinfo file: the mount's id and its parent's, the filesystem (``major:minor``), and
    the path of the mount's root in that filesystem."""

    id: str
    parent: str
    device: str
    root: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")


def parse_mountinfo(text: str) -> dict[str, MountEntry]:
    """Mount point -> the mount on top of it (later lines cover earlier ones)."""
    mounts = {}
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) >= 5:
            mounts[_unescape(fields[4])] = MountEntry(fields[0], fields[1], fields[2], _unescape(fields[3]))
    return mounts


def nested_devices(devices: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """``(device, parent device, relative path)`` for each disk device mounted inside another at the place its
    source has inside the other's source (what cci's protected paths are)."""
    disks = host_disks(devices)
    found = []
    for name, device in disks.items():
        best = None
        for parent, outer in disks.items():
            prefix_source, prefix_path = outer["source"].rstrip("/") + "/", outer["path"].rstrip("/") + "/"
            if parent != name and device["source"].startswith(prefix_source):
                relative = device["source"][len(prefix_source):]
                if device["path"] == prefix_path + relative and (best is None or len(relative) < len(best[2])):
                    best = (name, parent, relative)
        if best:
            found.append(best)
    return found


def mismatches(devices: Mapping[str, Mapping[str, Any]], mountinfo: str) -> list[str]:
    """The nested devices that are not mounted, on top, right on their parent's mount, from its filesystem at
    the place their source names, as the container sees it."""
    mounts = parse_mountinfo(mountinfo)
    wrong = []
    for name, parent, relative in nested_devices(devices):
        inner, outer = mounts.get(devices[name]["path"]), mounts.get(devices[parent]["path"])
        if inner is None or outer is None or inner.parent != outer.id or inner.device != outer.device or \
                inner.root != f"{outer.root.rstrip('/')}/{relative}":
            wrong.append(name)
    return wrong


def host_disks(devices: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The disk devices that mount a host path (not a storage pool's volume) somewhere in the container."""
    return {name: device for name, device in devices.items()
            if device.get("type") == "disk" and str(device.get("source", "")).startswith("/") and device.get("path")}


def expected_place(source: str, host_mounts: Mapping[str, MountEntry]) -> tuple[str, str] | None:
    """The filesystem (``major:minor``) and the path in it of host path ``source`` (link-free, absolute), from
    the host's mount table: the mount it lies on (the longest mount point above it), that mount's root, and
    the rest of the path."""
    source = posixpath.normpath(source)
    best = None
    for point in host_mounts:
        if source == point or source.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) > len(best):
                best = point
    if best is None:
        return None
    rest = source[len(best):].lstrip("/")
    entry = host_mounts[best]
    return entry.device, posixpath.join(entry.root, rest) if rest else entry.root


def misplaced(devices: Mapping[str, Mapping[str, Any]], mountinfo: str, host_mountinfo: str) -> list[str]:
    """The host disk devices whose mount in the container (the one on top at their path) is not from the
    filesystem and path where the host finds their source now."""
    mounts, host = parse_mountinfo(mountinfo), parse_mountinfo(host_mountinfo)
    wrong = []
    for name, device in host_disks(devices).items():
        mounted = mounts.get(posixpath.normpath(device["path"]))
        if mounted is None or (mounted.device, mounted.root) != expected_place(device["source"], host):
            wrong.append(name)
    return wrong
