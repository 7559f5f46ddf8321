"""One Incus instance behind cci's :class:`~cci_core.driver.Container` interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cci_core.driver import LABEL_PREFIX, Container, ExecResult, OutputHandler
from cci_builtin_plugins.incus.errors import incus_errors

if TYPE_CHECKING:
    from pylxd.models import Instance

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


class IncusContainer(Container):
    """A pylxd instance; every call is one REST request (or an operation waited on)."""

    def __init__(self, instance: Instance) -> None:
        self._instance = instance

    @property
    def name(self) -> str:
        return str(self._instance.name)

    def status(self) -> str:
        with incus_errors(f"reading the state of {self.name}"):
            self._instance.sync()
        return str(self._instance.status).lower()

    def labels(self) -> Mapping[str, str]:
        return labels_of(self._instance.config)

    def set_labels(self, labels: Mapping[str, str]) -> None:
        config = {LABEL_PREFIX + key: value for key, value in labels.items()}
        self._patch({"config": config}, f"labelling {self.name}")
        self._instance.config.update(config)

    def start(self) -> None:
        with incus_errors(f"starting {self.name}"):
            self._instance.start(wait=True)

    def stop(self, *, force: bool = False, timeout: int = 60) -> None:
        with incus_errors(f"stopping {self.name}"):
            self._instance.stop(force=force, timeout=timeout, wait=True)

    def delete(self) -> None:
        with incus_errors(f"deleting {self.name}"):
            self._instance.delete(wait=True)

    def add_mount(self, mount: Mount) -> None:
        self._patch({"devices": {mount.device: disk_device(mount)}}, f"mounting {mount.source} in {self.name}")

    def push_file(self, path: str, data: bytes, *, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
        with incus_errors(f"writing {path} in {self.name}"):
            self._instance.files.put(path, data, mode=mode, uid=uid, gid=gid)

    def pull_file(self, path: str) -> bytes:
        with incus_errors(f"reading {path} in {self.name}"):
            return bytes(self._instance.files.get(path))

    def push_tree(self, source: Path, path: str, *, uid: int = 0, gid: int = 0) -> None:
        with incus_errors(f"copying {source} to {self.name}:{path}"):
            self._instance.files.recursive_put(str(source), path, uid=uid, gid=gid)

    def pull_tree(self, path: str, destination: Path) -> None:
        with incus_errors(f"copying {self.name}:{path} to {destination}"):
            self._instance.files.recursive_get(path, str(destination))

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: int = 0,
        group: int = 0,
        environment: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdout: OutputHandler | None = None,
        stderr: OutputHandler | None = None,
    ) -> ExecResult:
        with incus_errors(f"running {argv[0] if argv else '?'} in {self.name}"):
            result = self._instance.execute(
                list(argv), environment=dict(environment or {}), decode=False, user=user, group=group, cwd=cwd,
                stdout_handler=stdout, stderr_handler=stderr,
            )
        return ExecResult(result.exit_code, _text(result.stdout), _text(result.stderr))

    def _patch(self, body: dict[str, Any], action: str) -> None:
        """PATCH merges the given config keys and devices into the instance."""
        with incus_errors(action):
            response = self._instance.api.patch(json=body)
            operation = response.json().get("operation")
            if operation:
                self._instance.client.operations.wait_for_operation(operation)


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""
