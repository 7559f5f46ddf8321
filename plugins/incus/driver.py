"""The Incus implementation of :class:`cci_core.driver.Driver`, over the REST API (see :mod:`.rest`)."""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from cci_core.api import (
    LABEL_PREFIX,
    BackendError,
    ContainerExistsError,
    ContainerInfo,
    ContainerSpec,
    Driver,
    ImageInfo,
    NotFoundError,
    ServerInfo,
)
from cci_builtin_plugins.incus.connection import quote, resolve_endpoint
from cci_builtin_plugins.incus.errors import APIError, APINotFound, is_conflict
from cci_builtin_plugins.incus.idmap import UserMap
from cci_builtin_plugins.incus.instance_config import labels_of
from cci_builtin_plugins.incus.settings import IncusSettings

if TYPE_CHECKING:
    from cci_builtin_plugins.incus.container import IncusContainer
    from cci_builtin_plugins.incus.networks import PolicyNetworks
    from cci_builtin_plugins.incus.rest import IncusAPI
    from cci_core.api import NetworkPlan, PolicyNetwork, RequestRecord, Substitution

#: an Incus instance name: letters, digits and hyphens, not starting or ending with a hyphen
INSTANCE_NAME = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z"
#: the shortest fingerprint prefix accepted in place of an alias (as short as `incus image list` shows)
MIN_FINGERPRINT_PREFIX = 12


#: the ioctls that make a btrfs subvolume (BTRFS_IOC_SNAP_CREATE, _SUBVOL_CREATE, _SNAP_CREATE_V2, _SUBVOL_CREATE_V2),
#: refused by seccomp (lines Incus adds to its default deny list, in LXC's syntax). On a btrfs pool the root disk's
#: ``size`` ([limits] disk) is a quota group of the container's subvolume; a subvolume made inside has one of its
#: own, so whatever is written there (any user may make one) is outside the limit, up to a full pool. The command
#: number is compared in its low 32 bits, which are all the kernel reads. Docker inside uses overlay2 all the same.
NO_SUBVOLUMES = "".join(f"ioctl errno 1 [1,{command:#x},SCMP_CMP_MASKED_EQ,0xffffffff]\n"
                        for command in (0x50009401, 0x5000940E, 0x50009417, 0x50009418))


class IncusDriver(Driver):
    """Containers on Incus, reached through its unix socket or a remote HTTPS endpoint."""

    name = "incus"
    summary = "Incus system containers (local unix socket or remote HTTPS)"
    #: unprivileged, with nesting so Docker works inside, no guest API (``/dev/incus`` would show the host's
    #: workspace path and cci's labels; a plugin that needs it sets it "true"), and no new btrfs subvolume
    #: (:data:`NO_SUBVOLUMES`)
    base_config = MappingProxyType({
        "security.privileged": "false",
        "security.guestapi": "false",
        "security.nesting": "true",
        "security.syscalls.intercept.mknod": "true",
        "security.syscalls.intercept.setxattr": "true",
        "security.syscalls.deny": NO_SUBVOLUMES,
    })

    def check_container_name(self, name: str) -> str | None:
        if re.match(INSTANCE_NAME, name):
            return None
        return "an Incus container name is 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen"

    @cached_property
    def settings(self) -> IncusSettings:
        """The ``[incus]`` section."""
        return IncusSettings.of(self.config)

    @property
    def container_uid(self) -> int:
        return self.settings.container_uid

    @cached_property
    def api(self) -> IncusAPI:
        """cci's REST client; the endpoint is resolved (and a local socket checked) on first use."""
        from cci_builtin_plugins.incus.rest import IncusAPI

        return IncusAPI(resolve_endpoint(self.settings, os.environ), self.settings.project)

    @cached_property
    def host_info(self) -> dict[str, Any]:
        """``GET /1.0``: the server's environment and API extensions."""
        return dict(self.api.get("/1.0", "connecting to Incus") or {})

    def server_info(self) -> ServerInfo:
        info = self.host_info
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
        return UserMap(os.getuid(), os.getgid(), self.settings.container_uid)

    def mounts_host_paths(self) -> bool:
        return self.api.endpoint.socket is not None  # (a remote would mount what it has at those paths)

    def _container(self, instance: dict[str, Any]) -> IncusContainer:
        from cci_builtin_plugins.incus.container import IncusContainer

        return IncusContainer(self.api, instance, self.user_map, nic_filtering=self.settings.network_filtering,
                              known_cas=self._known_cas)

    @cached_property
    def _known_cas(self) -> dict[str, str]:
        """The proxy CA of each network ensured here that has none (""): not read again at its containers' create
        and configure."""
        return {}

    def create(self, spec: ContainerSpec) -> IncusContainer:
        from cci_builtin_plugins.incus.limits import ROOT, instance_limits, root_size

        limits = {key: value for key, value in instance_limits(spec.limits).items() if value} if spec.limits else {}
        config, devices = self._planned(spec)
        size = root_size(spec.limits) if spec.limits else ""
        if size and (profile_root := self._profile_root):  # the root disk's size too: no update before the start
            devices[ROOT] = {**profile_root, "size": size}
        body = {
            "name": spec.name,
            "type": "container",
            "source": image_source(spec.image),
            "config": {**config, **limits, **{LABEL_PREFIX + key: value for key, value in spec.labels.items()}},
            "devices": devices,
            "ephemeral": spec.ephemeral,
        }
        try:
            self.api.call("POST", "/1.0/instances", f"creating {spec.name}", body)
        except APIError as exc:
            if is_conflict(exc):
                raise ContainerExistsError(f"container {spec.name} already exists") from exc
            if not self.image_exists(spec.image):
                raise NotFoundError(f"image {spec.image!r} not found",
                                    hint="build it with 'cci build', or pick one from 'cci image list'") from exc
            raise BackendError(str(exc), hint=_creation_hint(exc.detail)) from exc
        return self.get(spec.name)

    def _planned(self, spec: ContainerSpec) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """The config and devices of ``spec`` with its mounts and network as the container's
        :meth:`~IncusContainer.configure` would put them on it (which then has nothing left to change)."""
        if not spec.mounts and spec.network is None:
            return dict(spec.config), {}
        from cci_builtin_plugins.incus.proxy import ca_of

        unmade = self._container({"name": spec.name, "config": {}, "expanded_devices": self._profile_devices})
        ca = ca_of(self.api, spec.network, self._known_cas) if spec.network is not None else ""
        return unmade.planned(spec.config, spec.mounts, spec.network, ca)

    @cached_property
    def _profile_devices(self) -> dict[str, dict[str, Any]]:
        """The devices of the default profile, which a new container has (none when it cannot be read)."""
        try:
            profile = self.api.get("/1.0/profiles/default", "reading the default profile") or {}
        except APIError:
            return {}
        devices = profile.get("devices")
        return {name: dict(device) for name, device in devices.items() if isinstance(device, dict)} \
            if isinstance(devices, dict) else {}

    @property
    def _profile_root(self) -> dict[str, Any] | None:
        """The root disk device of the default profile (its pool), which a container's own root device with a
        size overrides; None when the profile has none (then ``[limits] disk`` is applied after the create)."""
        from cci_builtin_plugins.incus.limits import ROOT

        root = self._profile_devices.get(ROOT)
        return dict(root) if root and root.get("type") == "disk" and root.get("pool") else None

    supports_pool = True

    def warm(self, spec: ContainerSpec, network: str | None) -> IncusContainer:
        config = {**spec.config, "boot.autostart": "false"}  # (only cci starts a container, checking its mounts)
        if self.user_map.needs_raw_idmap():  # the map a shifted mount needs applies only at start
            config["raw.idmap"] = self.user_map.raw_idmap()
        limits = self.config.limits if self.config is not None else None
        container = self.create(spec._replace(config=config, mounts=(), limits=limits, network=network))
        container.configure({}, [], network)  # (nothing left to change; a proxy's CA goes in)
        if limits is not None:
            container.apply_limits(limits)
        container.start()
        return container

    def image_fingerprint(self, image: str) -> str | None:
        if ":" in image:
            return None  # an image server's: pulled at create
        try:
            return str(self.api.get(f"/1.0/images/aliases/{quote(image)}", f"looking up image {image}")["target"])
        except APINotFound:
            return None

    @cached_property
    def networks(self) -> PolicyNetworks:
        """The networks that enforce network policies (see :mod:`.networks`)."""
        from cci_builtin_plugins.incus.networks import PolicyNetworks

        image = getattr(self.config.network, "proxy_image", "") if self.config is not None else ""
        return PolicyNetworks(self.api, self.settings, image or "cci-proxy", build_image=self._build_proxy_image)

    def _build_proxy_image(self, alias: str) -> None:
        """The proxy image, built on the host the first time a proxy plan needs it (one progress line)."""
        import sys

        from cci_core.api import printable
        from cci_builtin_plugins.images.proxy_image import ensure_proxy_image

        ensure_proxy_image(self, alias, lambda line: print(f"cci: {printable(line)}", file=sys.stderr, flush=True))

    def ensure_network(self, plan: NetworkPlan) -> str:
        name = self.networks.ensure(plan)
        if plan.proxy is None:
            self._known_cas[name] = ""
        return name

    def route_secrets(self, network: str, substitutions: Sequence[Substitution]) -> None:
        self.networks.proxies.route_secrets(network, substitutions)

    def network_log(self, network: str, *, follow: bool = False) -> Iterator[RequestRecord]:
        if self.networks.proxies.find(network) is None:
            raise NotFoundError(f"network {network!r} has no proxy (only the proxy policy logs requests)",
                                hint="see 'cci network list'")
        return self.networks.proxies.log(network, follow=follow)

    def policy_networks(self) -> list[PolicyNetwork]:
        return self.networks.list()

    def delete_network(self, name: str) -> None:
        self.networks.delete(name)

    def get(self, name: str) -> IncusContainer:
        try:
            return self._container(self.api.get(f"/1.0/instances/{quote(name)}", f"looking up {name}"))
        except APINotFound:
            raise NotFoundError(f"no container named {name!r}", hint="see 'cci list'") from None

    def exists(self, name: str) -> bool:
        try:
            self.api.get(f"/1.0/instances/{quote(name)}", f"looking up {name}")
        except APINotFound:
            return False
        return True

    def list_containers(self) -> list[ContainerInfo]:
        from cci_builtin_plugins.incus.ports import published

        instances = self.api.get("/1.0/instances", "listing containers", recursion=1) or []
        return [
            ContainerInfo(
                name=item["name"],
                status=str(item.get("status", "")).lower(),
                labels=labels_of(item.get("config") or {}),
                created=item.get("created_at", ""),
                image=(item.get("config") or {}).get("image.description", ""),
                ephemeral=bool(item.get("ephemeral")),
                ports=tuple(published(item.get("expanded_devices") or {})),
            )
            for item in instances
            if item.get("type", "container") == "container"
        ]

    def list_images(self) -> list[ImageInfo]:
        images = self.api.get("/1.0/images", "listing images", recursion=1) or []
        return [_image_info(item) for item in images]

    def image_exists(self, alias: str) -> bool:
        return alias_exists(self.api, alias)

    def publish(self, container: str, alias: str, *, description: str = "",
                properties: Mapping[str, str] | None = None) -> ImageInfo:
        action = f"publishing {container} as {alias}"
        body: dict[str, Any] = {"source": {"type": "instance", "name": container},
                                "properties": {**(properties or {}), "description": description}}
        moving = self.image_exists(alias)
        if not moving:  # the new image gets its alias in the same operation
            body["aliases"] = [{"name": alias, "description": description}]
        operation = self.api.call("POST", "/1.0/images", action, body) or {}
        fingerprint = (operation.get("metadata") or {})["fingerprint"]
        if moving:
            self.tag_image(alias, fingerprint, description=description)
        return _image_info(self.api.get(f"/1.0/images/{fingerprint}", action))

    def import_image(self, tarball: Path, *, description: str = "") -> ImageInfo:
        action = f"importing {tarball}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(tarball.stat().st_size)}
        if description:
            headers["X-Incus-properties"] = urlencode({"description": description})
        before = {image.fingerprint for image in self.list_images()}
        operation = None
        try:
            with tarball.open("rb") as stream:
                answer = self.api.request("POST", "/1.0/images", action, data=stream, headers=headers).json()
            operation = answer["operation"]
            fingerprint = (self.api.wait(operation, action).get("metadata") or {})["fingerprint"]
        except APIError as exc:
            if "already exists" not in exc.detail:
                raise
            fingerprint = _sha256(tarball)
        except BaseException:  # Ctrl+C, SIGTERM, a lost connection: Incus may still be making the image
            self._abandon_import(tarball, operation, before)
            raise
        return _image_info(self.api.get(f"/1.0/images/{fingerprint}", action))

    def _abandon_import(self, tarball: Path, operation: str | None, before: set[str]) -> None:
        """Wait (bounded, ignoring further interrupts) for an import left midway, then delete the image it
        made, unless that image was there before; never raises."""
        from cci_core.api import CLEANUP_SECONDS, CciError, ignoring_interrupts

        with ignoring_interrupts():
            try:
                if operation:
                    self.api.wait(operation, f"waiting for the import of {tarball}", timeout=CLEANUP_SECONDS)
                fingerprint = _sha256(tarball)  # Incus's fingerprint of a unified tarball
                if fingerprint not in before and fingerprint in {image.fingerprint for image in self.list_images()}:
                    self.api.call("DELETE", f"/1.0/images/{fingerprint}", f"deleting the half-imported {tarball}")
            except (CciError, OSError):
                pass

    def tag_image(self, alias: str, fingerprint: str, *, description: str = "") -> None:
        action = f"pointing image alias {alias} at {fingerprint[:12]}"
        if self.image_exists(alias):  # one PUT moves the alias: it never points nowhere
            self.api.call("PUT", f"/1.0/images/aliases/{quote(alias)}", action,
                          {"target": fingerprint, "description": description})
        else:
            self.api.call("POST", "/1.0/images/aliases", action,
                          {"name": alias, "target": fingerprint, "description": description})

    def delete_image(self, alias_or_fingerprint: str) -> None:
        fingerprint = self._resolve_image(alias_or_fingerprint)
        self.api.call("DELETE", f"/1.0/images/{fingerprint}", f"deleting image {alias_or_fingerprint}")

    def _resolve_image(self, alias_or_fingerprint: str) -> str:
        """An alias first; otherwise a full fingerprint or an unambiguous prefix of at least 12 hex digits."""
        images = self.list_images()
        for image in images:
            if alias_or_fingerprint and alias_or_fingerprint in image.aliases:
                return image.fingerprint
        prefix = alias_or_fingerprint.lower()
        matches = []
        if len(prefix) >= MIN_FINGERPRINT_PREFIX and all(char in "0123456789abcdef" for char in prefix):
            matches = [image.fingerprint for image in images if image.fingerprint.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        problem = "is ambiguous" if matches else "matches no image alias or fingerprint"
        raise NotFoundError(f"image {alias_or_fingerprint!r} {problem}",
                            hint=f"name an alias, or at least {MIN_FINGERPRINT_PREFIX} hex digits of a fingerprint "
                                 "(see 'cci image list --all')")


#: image servers reachable as ``<remote>:<alias>``, as the incus CLI names them by default
REMOTES = {"images": "https://images.linuxcontainers.org"}


def alias_exists(api: IncusAPI, alias: str) -> bool:
    """Whether the image alias ``alias`` exists (an empty one never does)."""
    if not alias:
        return False
    try:
        api.get(f"/1.0/images/aliases/{quote(alias)}", f"looking up image {alias}")
    except APINotFound:
        return False
    return True


def image_source(image: str) -> dict[str, str]:
    """The create request's source for ``image``: a local alias, or ``images:<alias>`` on the image server."""
    remote, colon, alias = image.partition(":")
    if colon and remote in REMOTES:
        return {"type": "image", "mode": "pull", "protocol": "simplestreams", "server": REMOTES[remote],
                "alias": alias}
    return {"type": "image", "alias": image}


def _image_info(item: dict[str, Any]) -> ImageInfo:
    properties = {str(key): str(value) for key, value in (item.get("properties") or {}).items()}
    return ImageInfo(
        fingerprint=item["fingerprint"],
        aliases=tuple(alias["name"] for alias in item.get("aliases") or ()),
        description=properties.get("description", ""),
        created=item.get("created_at", ""),
        size=int(item.get("size") or 0),
        properties=properties,
    )


def _sha256(path: Path) -> str:
    """An image's fingerprint: the SHA-256 of its (unified) tarball."""
    from cci_core.api import sha256

    digest = sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _creation_hint(message: str) -> str | None:
    lowered = message.lower()
    if "limits." in lowered:
        return "Incus refused a value of [limits]: change it in the config, or with --limit KEY=VALUE"
    if "root" in lowered and "device" in lowered or "storage pool" in lowered:
        return "the default profile needs a root disk on a storage pool: see 'incus profile show default'"
    if "network" in lowered:
        return "the default profile's network is missing: see 'incus profile show default' and 'incus network list'"
    return None
