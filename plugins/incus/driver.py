"""The Incus implementation of :class:`cci_core.driver.Driver`, over the REST API with pylxd."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cci_core.driver import (
    LABEL_PREFIX,
    ContainerExistsError,
    ContainerInfo,
    ContainerSpec,
    Driver,
    ImageInfo,
    ServerInfo,
)
from cci_core.errors import BackendError, NotFoundError
from cci_builtin_plugins.incus.connection import connect
from cci_builtin_plugins.incus.container import IncusContainer, disk_device, labels_of
from cci_builtin_plugins.incus.errors import incus_errors, is_conflict
from cci_builtin_plugins.incus.idmap import UserMap

if TYPE_CHECKING:
    import pylxd


class IncusDriver(Driver):
    """Containers on Incus, reached through its unix socket or a remote HTTPS endpoint."""

    name = "incus"
    summary = "Incus system containers (local unix socket or remote HTTPS)"

    @cached_property
    def client(self) -> pylxd.Client:
        """The pylxd client, connected on first use."""
        return connect(self.config.incus, os.environ)

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

    @cached_property
    def user_map(self) -> UserMap:
        """The invoking user and the container user their workspace files map to."""
        return UserMap(os.getuid(), os.getgid(), self.config.incus.claude_uid)

    @cached_property
    def idmapped_mounts(self) -> bool:
        """Whether the server's kernel supports idmapped mounts (``shift=true`` disks); no extra request."""
        features = self.client.host_info.get("environment", {}).get("kernel_features") or {}
        return features.get("idmapped_mounts") == "true"

    def _container(self, instance: Any) -> IncusContainer:
        return IncusContainer(instance, self.user_map, self.idmapped_mounts)

    def create(self, spec: ContainerSpec) -> IncusContainer:
        from pylxd.exceptions import LXDAPIException

        body = {
            "name": spec.name,
            "source": {"type": "image", "alias": spec.image},
            "config": {**spec.config, **{LABEL_PREFIX + key: value for key, value in spec.labels.items()}},
            "devices": {mount.device: disk_device(mount) for mount in spec.mounts},
            "ephemeral": spec.ephemeral,
        }
        try:
            self.client.instances.create(body, wait=True)
        except LXDAPIException as exc:
            if is_conflict(exc):
                raise ContainerExistsError(f"container {spec.name} already exists") from exc
            if not self.image_exists(spec.image):
                raise NotFoundError(f"image {spec.image!r} not found",
                                    hint="build it with 'cci build', or pick another with --image") from exc
            raise BackendError(f"creating {spec.name}: {exc}", hint=_creation_hint(str(exc))) from exc
        return self.get(spec.name)

    def get(self, name: str) -> IncusContainer:
        try:
            with incus_errors(f"looking up {name}"):
                return self._container(self.client.instances.get(name))
        except NotFoundError:
            raise NotFoundError(f"no container named {name!r}", hint="see 'cci list'") from None

    def exists(self, name: str) -> bool:
        with incus_errors(f"looking up {name}"):
            return bool(self.client.instances.exists(name))

    def list_containers(self) -> list[ContainerInfo]:
        with incus_errors("listing containers"):
            instances = self.client.api.instances.get(params={"recursion": 1}).json()["metadata"]
        return [
            ContainerInfo(
                name=item["name"],
                status=str(item.get("status", "")).lower(),
                labels=labels_of(item.get("config") or {}),
                created=item.get("created_at", ""),
                image=(item.get("config") or {}).get("image.description", ""),
                ephemeral=bool(item.get("ephemeral")),
            )
            for item in instances
            if item.get("type", "container") == "container"
        ]

    def list_images(self) -> list[ImageInfo]:
        with incus_errors("listing images"):
            images = self.client.api.images.get(params={"recursion": 1}).json()["metadata"]
        return [_image_info(item) for item in images]

    def image_exists(self, alias: str) -> bool:
        try:
            with incus_errors(f"looking up image {alias}"):
                self.client.api.images.aliases[alias].get()
        except NotFoundError:
            return False
        return True

    def publish(self, container: str, alias: str, *, description: str = "") -> ImageInfo:
        body = {"source": {"type": "instance", "name": container}, "properties": {"description": description}}
        with incus_errors(f"publishing {container} as {alias}"):
            response = self.client.api.images.post(json=body)
            operation = self.client.operations.wait_for_operation(response.json()["operation"])
            fingerprint = operation.metadata["fingerprint"]
            aliases = self.client.api.images.aliases
            if self.image_exists(alias):
                aliases[alias].put(json={"target": fingerprint, "description": description})
            else:
                aliases.post(json={"name": alias, "target": fingerprint, "description": description})
            return _image_info(self.client.api.images[fingerprint].get().json()["metadata"])

    def delete_image(self, alias_or_fingerprint: str) -> None:
        fingerprint = self._resolve_image(alias_or_fingerprint)
        with incus_errors(f"deleting image {alias_or_fingerprint}"):
            response = self.client.api.images[fingerprint].delete()
            operation = response.json().get("operation")
            if operation:
                self.client.operations.wait_for_operation(operation)

    def _resolve_image(self, alias_or_fingerprint: str) -> str:
        """An alias first; otherwise a fingerprint or an unambiguous prefix of one."""
        images = self.list_images()
        for image in images:
            if alias_or_fingerprint in image.aliases:
                return image.fingerprint
        matches = [image.fingerprint for image in images if image.fingerprint.startswith(alias_or_fingerprint)]
        if len(matches) == 1:
            return matches[0]
        problem = "is ambiguous" if matches else "matches no image"
        raise NotFoundError(f"image {alias_or_fingerprint!r} {problem}", hint="see 'cci image list --all'")


def _image_info(item: dict[str, Any]) -> ImageInfo:
    return ImageInfo(
        fingerprint=item["fingerprint"],
        aliases=tuple(alias["name"] for alias in item.get("aliases") or ()),
        description=(item.get("properties") or {}).get("description", ""),
        created=item.get("created_at", ""),
        size=int(item.get("size") or 0),
    )


def _creation_hint(message: str) -> str | None:
    lowered = message.lower()
    if "root" in lowered and "device" in lowered or "storage pool" in lowered:
        return "the default profile needs a root disk on a storage pool: see 'incus profile show default'"
    if "network" in lowered:
        return "the default profile's network is missing: see 'incus profile show default' and 'incus network list'"
    return None
