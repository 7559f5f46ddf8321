"""Instance config in cci's terms: disk devices for mounts, and cci's labels among the config keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cci_core.driver import LABEL_PREFIX

if TYPE_CHECKING:
    from cci_core.context import Mount


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
