"""Snapshots of an Incus instance: list, create, delete, and a restore of the root filesystem alone.

Incus 6.0 restores a snapshot's configuration with its root filesystem (its ``disk_only``
restore came later). That would put back what cci relies on as it was when the snapshot was
taken: cci's labels (the session's state, the process at work on it), the devices (the
workspace and storage mounts, the network, published ports), limits, and ``volatile.*`` keys
of that moment (a snapshot of a running container says ``volatile.last_state.power=RUNNING``
and names a veth that is gone). So, right after the restore, the configuration is put back as
it was just before it, except the keys that describe the restored disk itself
(:data:`DISK_KEYS`). The restore is made on the instance as it was read (its ETag): nothing
changed in between.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cci_core.api import BackendError, ContainerExistsError, NotFoundError, SnapshotInfo
from cci_builtin_plugins.incus.errors import APIError, APINotFound, is_conflict
from cci_builtin_plugins.incus.rest import IncusAPI, quote

_T = TypeVar("_T")

#: the keys that describe the restored root filesystem: taken from the snapshot, not kept (how its files are
#: shifted on disk; the generation id Incus renews at each restore)
DISK_KEYS = ("volatile.last_state.idmap", "volatile.uuid.generation")
#: the idmap keys Incus refuses to see removed by an update (kept from the snapshot when the instance had none)
IDMAP_KEYS = ("volatile.idmap.base", "volatile.idmap.current", "volatile.idmap.next", "volatile.last_state.idmap")
#: attempts at an update while something else (volatile keys) changes the instance meanwhile
ATTEMPTS = 10


def kept_config(before: Mapping[str, str], restored: Mapping[str, str]) -> dict[str, str]:
    """The configuration after a restore: ``before`` (the instance's just before it), with the restored snapshot's
    :data:`DISK_KEYS`, and its idmap keys that ``before`` lacks."""
    config = dict(before)
    config.update({key: restored[key] for key in DISK_KEYS if key in restored})
    config.update({key: restored[key] for key in IDMAP_KEYS if key in restored and key not in config})
    return config


def taken_at(created: str) -> tuple[str, str]:
    """A time as Incus writes it (RFC 3339 in UTC, nanoseconds without their trailing zeros) as a key that sorts by
    time: ``...:05Z`` before ``...:05.3Z``, ``...:05.1Z`` before ``...:05.10000001Z``."""
    seconds, _, fraction = created.rstrip("Z").partition(".")
    return seconds, fraction.ljust(9, "0")


def _info(snapshot: Mapping[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(str(snapshot["name"]).rpartition("/")[2], str(snapshot.get("created_at") or ""))


class InstanceSnapshots:
    """The snapshots of instance ``name``.

    :param when_idle: makes a request, waiting for and retrying it while another operation holds the instance.
    :param put_edited: reads the instance, lets an edit change its writable fields, puts it back (ETag checked).
    """

    def __init__(self, api: IncusAPI, name: str, when_idle: Callable[[Callable[[], Any]], Any],
                 put_edited: Callable[[str, Callable[[dict[str, Any]], bool]], object]) -> None:
        self._api, self._name = api, name
        self._path = f"/1.0/instances/{quote(name)}"
        self._when_idle, self._put_edited = when_idle, put_edited

    def _snapshot_path(self, snapshot: str) -> str:
        return f"{self._path}/snapshots/{quote(snapshot)}"

    def list(self) -> list[SnapshotInfo]:
        """The snapshots, oldest first (by the time Incus took them, then by name)."""
        try:
            found = self._api.get(f"{self._path}/snapshots", f"listing the snapshots of {self._name}", recursion=1)
        except APINotFound:
            raise NotFoundError(f"no container named {self._name!r}") from None
        infos = [_info(snapshot) for snapshot in found or []]
        return sorted(infos, key=lambda info: (taken_at(info.created), info.name))

    def get(self, snapshot: str) -> SnapshotInfo:
        """One snapshot; a missing one is a :class:`NotFoundError`."""
        try:
            return _info(self._api.get(self._snapshot_path(snapshot), f"reading snapshot {snapshot} of {self._name}"))
        except APINotFound:
            raise NotFoundError(f"{self._name} has no snapshot {snapshot!r}") from None

    def create(self, snapshot: str) -> SnapshotInfo:
        """Take snapshot ``snapshot`` (stateless: the disk and the configuration); a name taken is a
        :class:`ContainerExistsError`."""
        action = f"taking snapshot {snapshot} of {self._name}"
        try:
            self._when_idle(lambda: self._api.call("POST", f"{self._path}/snapshots", action,
                                                   {"name": snapshot, "stateful": False}))
        except APINotFound:
            raise NotFoundError(f"no container named {self._name!r}") from None
        except APIError as exc:
            if is_conflict(exc):
                raise ContainerExistsError(f"{self._name} already has a snapshot {snapshot!r}") from exc
            raise
        return self.get(snapshot)

    def delete(self, snapshot: str) -> None:
        """Delete snapshot ``snapshot``; a missing one is a :class:`NotFoundError`."""
        action = f"deleting snapshot {snapshot} of {self._name}"
        try:
            self._when_idle(lambda: self._api.call("DELETE", self._snapshot_path(snapshot), action))
        except APINotFound:
            raise NotFoundError(f"{self._name} has no snapshot {snapshot!r}") from None

    def restore(self, snapshot: str) -> None:
        """Put the root filesystem back to ``snapshot``, the configuration kept as it is now (see the module)."""
        self.get(snapshot)
        action = f"restoring {self._name} to snapshot {snapshot}"
        for _attempt in range(ATTEMPTS):
            response = self._api.request("GET", self._path, f"reading {self._name}")
            before = response.json()["metadata"]
            headers = {"If-Match": response.headers.get("ETag", "")}
            try:
                self._when_idle(lambda: self._api.call("PUT", self._path, action, {"restore": snapshot},
                                                       headers=headers))
                break
            except APIError as exc:
                if exc.status != 412:
                    raise
        else:
            raise BackendError(f"{action}: it kept changing under us")

        def keep(current: dict[str, Any]) -> bool:
            restored = current.get("config") or {}
            current.update({key: before[key] for key in current if key in before})
            current["config"] = kept_config(before.get("config") or {}, restored)
            return True

        try:
            self._put_edited(f"putting back the configuration of {self._name} after its restore", keep)
        except BackendError as exc:
            raise BackendError(f"{self._name} was restored to snapshot {snapshot}, but its configuration is the "
                               f"snapshot's: {exc}") from exc
