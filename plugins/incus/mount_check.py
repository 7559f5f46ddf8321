"""After a start: are the nested disk mounts what their devices say?

Incus follows links when it mounts a device's ``source``. A device whose source
lies inside another device's source (``.git/hooks`` in the workspace, say) names
a path the container can change: between cci's check and the mount, another
session of the same workspace could turn it into a link to any directory of
the user's. So after each start, the container's own mount table (read on the
host, from ``/proc/<init pid>/mountinfo``) must show each nested device mounted
from its parent's filesystem at the same relative place; anything else stops
the container before anything in it uses the mount.
"""

from __future__ import annotations

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
    disks = {name: device for name, device in devices.items()
             if device.get("type") == "disk" and device.get("source", "").startswith("/") and device.get("path")}
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
