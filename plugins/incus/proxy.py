"""The filtering proxy of a plan with ``proxy`` (see :mod:`.networks`): one Incus container per policy network.

The proxy container ``cci-proxy-<digest of the bridge's name>`` sits on the plan's bridge
(its NIC port-isolated and filtered, its egress the plan's ACL), runs squid from the image
``[network] proxy_image``, and is labelled ``user.cci.kind=proxy``: it is no session, so
``cci list``, ``kill`` and ``clean`` pass it by; ``cci network delete`` deletes it with its bridge.

Agent containers on such a network get no NIC at all (:func:`agent_devices`): an Incus
``proxy`` device listens on 127.0.0.1:3128 inside them and connects to a unix socket on the
Incus server, which the proxy container's own host-bound ``proxy`` device serves with squid's
port. The socket lives in the directory of Incus's own local socket (``/var/lib/incus``: root's,
mode 0711, on every local Incus) with mode 0600 and owner root: only Incus's own forkproxy (root)
connects to it, no other local user can use the proxy or its credentials. A TCP listener on the
bridge would be open to every local user of the host.

The squid CA is made inside the proxy container at its first start, by the image's own step before squid's
(``cci-proxy-prepare``, see :mod:`cci_builtin_plugins.images.proxy_image`; ``openssl``: the key never
leaves it); its certificate is kept in the container's config key ``user.cci.proxy-ca``, and
pushed into each agent (:meth:`IncusContainer.configure <.container.IncusContainer.configure>`) with the
variables that make clients trust it (:func:`agent_environment`).
The rendered configuration's digest is the key ``user.cci.proxy-config``; squid's
``visible_hostname`` carries it too, so that :meth:`ProxyContainers.wait_ready` knows the
configuration it asked for is the one in force (after a start or a ``squid -k reconfigure``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from cci_core.api import LABEL_PREFIX, Backoff, BackendError, CciError, ProxySpec, RequestRecord, sha256
from cci_builtin_plugins.incus.errors import APIError, APINotFound, is_conflict
from cci_builtin_plugins.incus.instance_config import nic_devices
from cci_builtin_plugins.incus.rest import quote

if TYPE_CHECKING:
    from cci_core.api import Substitution
    from cci_builtin_plugins.incus.container import IncusContainer
    from cci_builtin_plugins.incus.rest import IncusAPI

PREFIX = "cci-proxy-"
#: the kind label of a proxy container (sessions are ``session``/``run``; see SessionRecord.is_session)
KIND = "proxy"
NETWORK_LABEL = "proxy-network"
CA_KEY = LABEL_PREFIX + "proxy-ca"
CONFIG_KEY = LABEL_PREFIX + "proxy-config"
SECRETS_KEY = LABEL_PREFIX + "proxy-secrets"
#: when a launch last asked for the proxy (the host guard leaves a proxy asked for lately running)
WANTED_LABEL = "proxy-wanted"
WANTED_KEY = LABEL_PREFIX + WANTED_LABEL
#: set by :func:`stop_unused` (a compare-and-set on WANTED_KEY) right before it stops the proxy, cleared by a
#: start: a launch that asks for a proxy so marked lets that stop land, then starts it again
STOPPING_LABEL = "proxy-stopping"
STOPPING_KEY = LABEL_PREFIX + STOPPING_LABEL
#: how long a launch waits for a stop so marked to land (longer: its stopper died, the mark is stale)
STOP_SETTLE_SECONDS = 30.0
#: squid's port, inside the proxy container and (through the device) inside each agent
PORT = 3128
#: the name of the proxy device in both containers
DEVICE = "cci-proxy"
PROXY_URL = f"http://127.0.0.1:{PORT}"
NO_PROXY = "localhost,127.0.0.1,::1"
#: in the agent: the proxy CA alone, and the image's bundle with it
CA_FILE = "/usr/local/share/ca-certificates/cci-proxy.crt"
CA_BUNDLE = "/etc/cci/ca-certificates.crt"
IMAGE_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: the variables an agent gets (the CA ones point at CA_BUNDLE, NODE_EXTRA_CA_CERTS at CA_FILE)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")
BUNDLE_VARIABLES = ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE", "PIP_CERT")
CA_VARIABLES = ("NODE_EXTRA_CA_CERTS",)
#: in the proxy container (squid's own files: :mod:`.squid`): squid.conf's last line includes APPLIED_CONF,
#: the ``visible_hostname`` telling which configuration is in force
APPLIED_CONF = "/etc/squid/cci-applied.conf"
#: the substitutions the proxy holds (mode 0600, root's): read back to add another one
SUBSTITUTIONS = "/etc/squid/cci-substitutions.json"
#: the instance config keys of a proxy: the configuration's digest, its spec, its trust CA's digest
SPEC_KEY = LABEL_PREFIX + "proxy-spec"
TRUST_KEY = LABEL_PREFIX + "proxy-trust"
#: the digest of the configuration rendered without secrets (:func:`template_digest`): a cci whose squid
#: configuration differs from the one in force (an update of cci) applies its own
TEMPLATE_KEY = LABEL_PREFIX + "proxy-template"
#: how long squid may take to answer after a start or a reconfigure
READY_SECONDS = 60.0


def socket_dir_of(api: IncusAPI) -> str:
    """Where the proxies' sockets go: the directory of Incus's local socket (a remote Incus: its default one)."""
    socket = api.endpoint.socket
    return str(PurePosixPath(str(socket)).parent) if socket is not None else "/var/lib/incus"


def ca_of(api: IncusAPI, network: str, known: Mapping[str, str] | None = None) -> str:
    """The CA of the proxy of bridge ``network`` ("": the network has no proxy); ``known``: the CAs of networks
    this process ensured, not read again."""
    if known is not None and network in known:
        return known[network]
    name = proxy_name(network)
    try:
        instance = api.get(f"/1.0/instances/{quote(name)}", f"looking up proxy {name}") or {}
    except APINotFound:
        return ""
    config = instance.get("config") or {}
    return str(config.get(CA_KEY, "")) if is_proxy(config) else ""


def proxy_name(network: str) -> str:
    """The proxy container of bridge ``network``."""
    return PREFIX + sha256(network.encode()).hexdigest()[:8]


def socket_path(socket_dir: str, project: str, network: str) -> str:
    """The unix socket on the Incus server through which the agents of ``network`` reach its proxy."""
    digest = sha256(f"{project}\0{network}".encode()).hexdigest()[:12]
    return str(PurePosixPath(socket_dir, f"cci-proxy-{digest}.sock"))


def host_device(socket: str) -> dict[str, str]:
    """The proxy container's device: the socket on the host, squid's port inside; only root may connect."""
    return {"type": "proxy", "bind": "host", "listen": f"unix:{socket}", "connect": f"tcp:127.0.0.1:{PORT}",
            "mode": "0600", "uid": "0", "gid": "0"}


def agent_device(socket: str) -> dict[str, str]:
    """An agent's device: squid's port on the agent's loopback, connected to the proxy's socket on the host."""
    return {"type": "proxy", "bind": "instance", "listen": f"tcp:127.0.0.1:{PORT}", "connect": f"unix:{socket}"}


def agent_environment() -> dict[str, str]:
    """The ``environment.*`` keys of an agent behind the proxy."""
    values = {**dict.fromkeys(PROXY_VARIABLES, PROXY_URL), **dict.fromkeys(NO_PROXY_VARIABLES, NO_PROXY),
              **dict.fromkeys(BUNDLE_VARIABLES, CA_BUNDLE), **dict.fromkeys(CA_VARIABLES, CA_FILE)}
    return {f"environment.{name}": value for name, value in values.items()}


#: an agent's config key naming its proxy container
AGENT_PROXY_KEY = LABEL_PREFIX + "proxy"
#: every config key an agent gets (removed again when the agent leaves the proxy)
AGENT_KEYS = (*agent_environment(), AGENT_PROXY_KEY)


def agent_devices(devices: Mapping[str, Mapping[str, Any]], socket: str) -> dict[str, dict[str, str]]:
    """Devices that put an agent behind the proxy: every NIC masked (``type=none``), the proxy device added."""
    nics = sorted(name for name, device in devices.items() if device.get("type") == "nic")
    return {**{name: {"type": "none"} for name in nics or ["eth0"]}, DEVICE: agent_device(socket)}


def bundle(image_bundle: bytes, ca: str) -> bytes:
    """The image's CA bundle with the proxy CA after it."""
    text = image_bundle if not image_bundle or image_bundle.endswith(b"\n") else image_bundle + b"\n"
    return text + ca.encode()


def probe_command(hostname: str) -> list[str]:
    """A command run in the proxy container: exit 0 once squid answers with ``visible_hostname`` ``hostname``;
    exit 3 (printing systemd's word on it) once squid's unit has failed or does not exist.

    It asks for no URL: squid answers 400 and logs a line that is no request record (never shown).
    """
    script = (f'if exec 3<>/dev/tcp/127.0.0.1/{PORT}; then '
              'printf "GET /cci-probe HTTP/1.0\\r\\n\\r\\n" >&3; '
              f'timeout 5 cat <&3 | grep -q -F -- "{hostname}" && exit 0; exec 3>&-; fi 2>/dev/null; '
              'load=$(systemctl show -P LoadState squid 2>/dev/null); '
              'active=$(systemctl show -P ActiveState squid 2>/dev/null); '
              'case "$load/$active" in not-found/*|*/failed) echo "$load/$active"; exit 3;; esac; exit 1')
    return ["bash", "-c", script]


def squid_error(log: str) -> str:
    """The line of squid's log that says why it did not start (its last FATAL or ERROR line, else its last)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for marker in ("FATAL", "ERROR", "Bungled", "fail"):
        found = [line for line in lines if marker in line]
        if found:
            return found[-1]
    return lines[-1] if lines else "no log"


def rendered(spec: ProxySpec, substitutions: Sequence[Substitution], trust_ca: str) -> dict[str, tuple[bytes, int]]:
    """Every file of the proxy's configuration (:func:`squid.render`), squid.conf including cci's last word."""
    from cci_builtin_plugins.incus import squid

    files = dict(squid.render(spec, substitutions, trust_ca=trust_ca))
    content, mode = files[squid.SQUID_CONF]
    files[squid.SQUID_CONF] = (content + f"include {APPLIED_CONF}\n".encode(), mode)
    return files


def template_digest(spec: ProxySpec, trust_ca: str) -> str:
    """The digest of every file of the configuration for ``spec`` without secrets: it changes with cci's own
    squid configuration as well as with the rules."""
    digest = sha256()
    for path, (content, mode) in sorted(rendered(spec, [], trust_ca).items()):
        digest.update(f"{path}\0{mode:o}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()[:16]


def public_digest(spec: ProxySpec, substitutions: Sequence[Substitution], trust_ca: str) -> str:
    """What tells two configurations apart, computed without the secrets' values (it is kept in a label)."""
    text = json.dumps([template_digest(spec, trust_ca), sorted(_secret_tag(item) for item in substitutions)])
    return sha256(text.encode()).hexdigest()[:16]


def _secret_tag(substitution: Substitution) -> str:
    return sha256(substitution.placeholder.encode()).hexdigest()[:16]


def substitutions_json(substitutions: Sequence[Substitution]) -> bytes:
    return json.dumps([list(item) for item in substitutions]).encode()


def substitutions_of(data: bytes) -> list[Substitution]:
    """What :func:`substitutions_json` wrote (entries not of that shape are left out)."""
    from cci_core.api import Substitution

    try:
        document = json.loads(data)
    except ValueError:
        return []
    found = []
    for entry in document if isinstance(document, list) else ():
        try:
            name, placeholder, value, hosts, headers = entry
            found.append(Substitution(str(name), str(placeholder), str(value), tuple(map(str, hosts)),
                                      tuple(map(str, headers))))
        except (TypeError, ValueError):
            continue
    return found


class ProxyContainers:
    """Creates, starts, reconfigures and deletes the proxy containers of cci's policy networks."""

    def __init__(self, api: IncusAPI, image: str, socket_dir: str, *, nic_filtering: bool = True,
                 build_image: Callable[[str], None] | None = None) -> None:
        """``build_image(alias)``: makes the proxy image when it is missing (None: a missing one is an error)."""
        self.api = api
        self.image = image
        self.socket_dir = socket_dir
        self.nic_filtering = nic_filtering
        self.build_image = build_image

    def socket(self, network: str) -> str:
        return socket_path(self.socket_dir, self.api.project or "default", network)

    def _container(self, instance: Mapping[str, Any]) -> IncusContainer:
        from cci_builtin_plugins.incus.container import IncusContainer

        return IncusContainer(self.api, instance)

    def find(self, network: str) -> dict[str, Any] | None:
        """The proxy container of ``network`` as Incus has it, or None."""
        name = proxy_name(network)
        try:
            instance = dict(self.api.get(f"/1.0/instances/{quote(name)}", f"looking up proxy {name}"))
        except APINotFound:
            return None
        if not is_proxy(instance.get("config") or {}):
            raise BackendError(f"container {name} is in the way of network {network}'s proxy: cci did not make it",
                               hint=f"rename or delete {name}")
        return instance

    def ensure(self, network: str, spec: ProxySpec, trust_ca: str = "") -> None:
        """The proxy of ``network`` running and enforcing ``spec``: made, started or reconfigured as needed."""
        name = proxy_name(network)
        instance = self.find(network)
        if instance is None:
            instance = self._create(network, spec, trust_ca)
        instance = self._wait_made(name, instance)
        self._patch_config(name, {WANTED_KEY: f"{time.time():.0f}"})  # before a start: kept running from now
        instance = self.settled(name)
        config = instance.get("config") or {}
        container = self._container(instance)
        running = str(instance.get("status")) == "Running"
        if (config.get(SPEC_KEY) != spec_json(spec) or config.get(TRUST_KEY, "") != _digest(trust_ca)
                or config.get(TEMPLATE_KEY) != template_digest(spec, trust_ca)):
            with self._locked(container):
                self._apply(container, spec, self._substitutions(container), trust_ca, reconfigure=running)
        if not running:
            self.start(container, str(self._config(name).get(CONFIG_KEY, "")))

    def settled(self, name: str, instance: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The proxy as Incus has it (``instance``: as just read) once a stop :func:`stop_unused` decided on
        (:data:`STOPPING_KEY`) has landed: asked for after that decision, it is to be started again, not found
        running and then stopped."""
        instance = dict(instance or self.api.get(f"/1.0/instances/{quote(name)}", f"reading proxy {name}"))
        if (instance.get("config") or {}).get(STOPPING_KEY) and str(instance.get("status")) == "Running":
            if not self._container(instance).wait_stopped(STOP_SETTLE_SECONDS):
                self._patch_config(name, {STOPPING_KEY: ""})  # its stopper died before the stop: still running
            instance = dict(self.api.get(f"/1.0/instances/{quote(name)}", f"reading proxy {name}"))
        return instance

    def start(self, container: IncusContainer, digest: str) -> None:
        """Start a stopped proxy (another cci may just have) and wait for squid (see :meth:`wait_ready`)."""
        if container.labels().get(STOPPING_LABEL):
            self._patch_config(container.name, {STOPPING_KEY: ""})
        try:
            container.start()
        except APIError as exc:
            if "already running" not in exc.detail.lower():
                raise
        self.wait_ready(container, digest)

    def _create(self, network: str, spec: ProxySpec, trust_ca: str) -> dict[str, Any]:
        """Make, configure, start and check the proxy; nothing is left when that fails."""
        from cci_builtin_plugins.incus.driver import IncusDriver, image_source

        name = proxy_name(network)
        if self.build_image is not None and not self._image_exists():
            self.build_image(self.image)
        body = {
            "name": name, "type": "container", "source": image_source(self.image),
            "description": f"cci filtering proxy of network {network}",
            "config": {**IncusDriver.base_config, "security.nesting": "false", "boot.autostart": "false",
                       LABEL_PREFIX + "kind": KIND, LABEL_PREFIX + NETWORK_LABEL: network,
                       WANTED_KEY: f"{time.time():.0f}"},
            "devices": {DEVICE: host_device(self.socket(network))},
        }
        try:
            self.api.call("POST", "/1.0/instances", f"creating proxy {name}", body)
        except APIError as exc:
            if is_conflict(exc):  # another cci makes it: theirs is used
                found = self.find(network)
                if found is not None:
                    return found
            if not self._image_exists():
                raise BackendError(f"the proxy image {self.image!r} is missing",
                                   hint="build it with 'cci build proxy'") from exc
            raise
        try:
            instance = self.api.get(f"/1.0/instances/{quote(name)}", f"reading proxy {name}")
            nic = nic_devices(instance.get("expanded_devices") or {}, network, filtering=self.nic_filtering)
            self.api.call("PATCH", f"/1.0/instances/{quote(name)}", f"configuring proxy {name}", {"devices": nic})
            container = self._container(instance)
            try:
                self._apply(container, spec, [], trust_ca, reconfigure=False)
            except APINotFound:  # /etc/squid or /usr/local/sbin missing
                raise BackendError(f"the proxy {name} did not come up: its image {self.image!r} has no squid "
                                   "(not a proxy image?)", hint="'cci build proxy' builds the proxy image") from None
            container.start()
            self.wait_ready(container, str(self._config(name).get(CONFIG_KEY, "")))
            ca = container.pull_file(_squid().CA_CERT).decode("ascii")
            if "BEGIN CERTIFICATE" not in ca:
                raise BackendError(f"proxy {name} made no CA certificate")
            self._patch_config(name, {CA_KEY: ca})
        except BaseException:
            self._delete_quietly(name)
            raise
        return dict(self.api.get(f"/1.0/instances/{quote(name)}", f"reading proxy {name}"))

    def _config(self, name: str) -> dict[str, Any]:
        return dict(self.api.get(f"/1.0/instances/{quote(name)}", f"reading proxy {name}").get("config") or {})

    def _apply(self, container: IncusContainer, spec: ProxySpec, substitutions: Sequence[Substitution],
               trust_ca: str, *, reconfigure: bool) -> None:
        """Push the configuration for ``spec`` and ``substitutions``; a running squid reads it again (waited on)."""
        squid = _squid()
        files = rendered(spec, substitutions, trust_ca)
        container.make_directory(squid.CONF_DIR, mode=0o750, gid=squid.PROXY_GID)
        for path, (content, mode) in files.items():
            container.push_file(path, content, mode=mode, gid=squid.PROXY_GID)
        container.push_file(SUBSTITUTIONS, substitutions_json(substitutions), mode=0o600)
        digest = public_digest(spec, substitutions, trust_ca)
        container.push_file(APPLIED_CONF, f"visible_hostname cci-{digest}\n".encode(), mode=0o644)
        self._patch_config(container.name, {CONFIG_KEY: digest, SPEC_KEY: spec_json(spec), TRUST_KEY: _digest(trust_ca),
                                            TEMPLATE_KEY: template_digest(spec, trust_ca),
                                            SECRETS_KEY: ",".join(sorted(_secret_tag(item) for item in substitutions))})
        if reconfigure:
            try:
                result = container.exec(["squid", "-k", "reconfigure"])
            except CciError:
                if container.status() == "running":
                    raise
                return  # stopped meanwhile (as unused, by another cci or the host guard): its next start reads these
            if result.exit_code != 0:
                raise BackendError(f"proxy {container.name} refused its new configuration: "
                                   f"{squid_error(result.stderr + result.stdout)}")
            self.wait_ready(container, digest)

    def _substitutions(self, container: IncusContainer) -> list[Substitution]:
        """The substitutions the proxy holds (read from the proxy: their values are nowhere else)."""
        try:
            return substitutions_of(container.pull_file(SUBSTITUTIONS))
        except APINotFound:
            return []

    @contextlib.contextmanager
    def _locked(self, container: IncusContainer) -> Iterator[None]:
        """One cci at a time changes a proxy's configuration (an exclusive lock file in ~/.cci/run)."""
        import fcntl
        import os

        from cci_core.api import state_dir

        directory = state_dir() / "run"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(directory / f"{container.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _image_exists(self) -> bool:
        from cci_builtin_plugins.incus.driver import alias_exists

        return alias_exists(self.api, self.image)

    def _wait_made(self, name: str, instance: dict[str, Any]) -> dict[str, Any]:
        """The proxy once its maker has finished (its CA recorded): another cci may be making it right now."""
        backoff = Backoff(READY_SECONDS, first=0.05)
        while not (instance.get("config") or {}).get(CA_KEY):
            if not backoff.pause():
                raise BackendError(f"proxy {name} was not ready after {READY_SECONDS:.0f} s",
                                   hint=f"see 'incus info --show-log {name}'; 'cci network delete' makes it afresh")
            try:
                instance = dict(self.api.get(f"/1.0/instances/{quote(name)}", f"reading proxy {name}"))
            except APINotFound:
                raise BackendError(f"proxy {name} could not be made (another cci gave up on it)",
                                   hint="try again") from None
        return instance

    def _patch_config(self, name: str, config: Mapping[str, str]) -> None:
        """Merge ``config`` (keys under LABEL_PREFIX) into the proxy's, after a stop under way (Incus refuses
        updates meanwhile: see :meth:`IncusContainer._when_idle <.container.IncusContainer._when_idle>`)."""
        self._container({"name": name}).set_labels({key[len(LABEL_PREFIX):]: value for key, value in config.items()})

    def wait_ready(self, container: IncusContainer, digest: str, timeout: float = READY_SECONDS) -> None:
        """Wait until squid answers with the configuration of ``digest`` (see :func:`probe_command`)."""
        backoff = Backoff(timeout, first=0.05)
        why = ""
        while True:
            try:
                result = container.exec(probe_command(f"cci-{digest}"))
            except APIError:
                result = None  # not running yet
            if result is not None and result.exit_code == 0:
                return
            if result is not None and result.exit_code == 3:
                why = result.stdout.strip()
                break
            if container.status() not in ("running", "starting") or not backoff.pause():
                break
        if why.startswith("not-found/"):
            reason = f"its image {self.image!r} has no squid (not a proxy image?)"
        else:
            reason = self._squid_log(container)
        raise BackendError(f"the proxy {container.name} did not come up: {reason}",
                           hint=f"see 'incus exec {container.name} -- journalctl -u squid'; "
                                "'cci build proxy' builds the proxy image")

    def _squid_log(self, container: IncusContainer) -> str:
        from cci_core.api import printable

        try:
            result = container.exec(["sh", "-c", "journalctl -u squid -n 40 --no-pager -o cat 2>/dev/null; "
                                                 f"tail -n 40 {_squid().CACHE_LOG} 2>/dev/null"])
            return printable(squid_error(result.stdout))
        except APIError as exc:
            return str(exc)

    def route_secrets(self, network: str, substitutions: Sequence[Substitution]) -> None:
        """Add ``substitutions`` to those the proxy holds; reconfigure squid if any was new (waited on)."""
        instance = self._existing(network)
        if not {_secret_tag(item) for item in substitutions} - set(_secret_list(instance.get("config") or {})):
            return
        self._patch_config(str(instance["name"]), {WANTED_KEY: f"{time.time():.0f}"})  # a launch is still on its way
        container = self._container(instance)
        with self._locked(container):
            config = self._config(container.name)
            spec = spec_of(str(config.get(SPEC_KEY, "")))
            if spec is None:
                raise BackendError(f"proxy {container.name} has no configuration",
                                   hint="'cci network delete' its network; the next session makes it afresh")
            held = {item.placeholder: item for item in self._substitutions(container)}
            merged = {**held, **{item.placeholder: item for item in substitutions}}
            if list(merged) == list(held):
                return
            trust = str(config.get(TRUST_KEY, ""))
            self._apply(container, spec, list(merged.values()), self._trust_ca(container) if trust else "",
                        reconfigure=str(instance.get("status")) == "Running")

    def _trust_ca(self, container: IncusContainer) -> str:
        try:
            return container.pull_file(_squid().TRUST_CA).decode()
        except APINotFound:
            return ""

    def log(self, network: str, *, follow: bool = False) -> Iterator[RequestRecord]:
        """The proxy's request log as records, oldest first; with ``follow``, then each new request as squid
        writes it (``tail -F`` in the proxy), until closed."""
        from cci_builtin_plugins.incus.proxy_log import parse_line

        container = self._container(self._existing(network))
        for line in _log_lines(container, follow=follow):
            record = parse_line(line.decode("utf-8", "replace"))
            if record is not None:
                yield record

    def _existing(self, network: str) -> dict[str, Any]:
        instance = self.find(network)
        if instance is None:
            raise BackendError(f"network {network} has no proxy", hint="start a session with its policy again")
        return instance

    def stop(self, network: str) -> None:
        instance = self.find(network)
        if instance is not None and str(instance.get("status")) == "Running":
            self._container(instance).stop(force=True)

    def delete(self, network: str) -> None:
        """Delete the proxy of ``network`` (if it has one), running or not."""
        self._delete_quietly(proxy_name(network), quiet=False)

    def _delete_quietly(self, name: str, *, quiet: bool = True) -> None:
        from cci_core.api import ignoring_interrupts

        with ignoring_interrupts():
            try:
                container = self._container(self.api.get(f"/1.0/instances/{quote(name)}", f"reading proxy {name}"))
                if container.status() != "stopped":
                    container.stop(force=True)
                container.delete()
            except APINotFound:
                return
            except APIError:
                if not quiet:
                    raise


def proxy_users(instances: Iterable[Mapping[str, Any]], socket: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """For each bridge with a proxy container: the proxy's ``name``, ``status`` and ``wanted`` time, and the
    ``agents`` behind it.

    Agents have no NIC on the bridge (Incus's ``used_by`` misses them): an agent is one whose
    proxy device connects to the bridge's socket (``socket(bridge)``).
    """
    found: dict[str, dict[str, Any]] = {}
    for instance in instances:
        config = instance.get("config") or {}
        if is_proxy(config):
            try:
                wanted = float(config.get(WANTED_KEY) or 0)
            except ValueError:
                wanted = 0.0
            found.setdefault(str(config.get(LABEL_PREFIX + NETWORK_LABEL, "")), {"agents": []}).update(
                proxy=instance["name"], status=str(instance.get("status", "")).lower(), wanted=wanted,
                wanted_label=str(config.get(WANTED_KEY, "")), made=bool(config.get(CA_KEY)))
    sockets = {f"unix:{socket(bridge)}": entry for bridge, entry in found.items()}
    for instance in instances:
        device = (instance.get("devices") or {}).get(DEVICE) or {}
        entry = sockets.get(device.get("connect", "")) if device.get("bind") == "instance" else None
        if entry is not None:
            entry["agents"].append(instance["name"])
    return found


#: a proxy asked for (by a launch) within this many seconds is never stopped as unused
STOP_GRACE_SECONDS = 10.0


def stop_unused(api: IncusAPI, *, now: float | None = None) -> list[str]:
    """Stop every running proxy no agent uses and no launch asked for lately; the names of those stopped.

    Called when an agent is deleted and by the host guard; a launch starts its proxy again. A launch may ask for
    the proxy after the listing: the stop is marked (:data:`STOPPING_KEY`) only if it has not, and a launch that
    asks for it after the mark waits for this stop and starts it again (:meth:`ProxyContainers.settled`).
    """
    from cci_builtin_plugins.incus.container import IncusContainer

    now = time.time() if now is None else now
    instances = api.get("/1.0/instances", "listing containers", recursion=1) or []
    directory, project = socket_dir_of(api), api.project or "default"
    stopped = []
    for entry in proxy_users(instances, lambda bridge: socket_path(directory, project, bridge)).values():
        if entry["status"] == "running" and entry["made"] and not entry["agents"] \
                and now - entry["wanted"] >= STOP_GRACE_SECONDS:  # (one being made is another cci's)
            container = IncusContainer(api, {"name": entry["proxy"]})
            try:
                if not container.compare_and_set_labels({WANTED_LABEL: entry["wanted_label"]},
                                                        {STOPPING_LABEL: f"{now:.0f}"}):
                    continue  # a launch asked for it meanwhile
                container.stop(force=True)
            except APIError:
                continue  # stopped or deleted meanwhile
            stopped.append(entry["proxy"])
    return stopped


def start_proxy_of(api: IncusAPI, agent_config: Mapping[str, Any]) -> None:
    """Start the proxy an agent is behind (:data:`AGENT_PROXY_KEY`) if it is stopped, and wait for squid."""
    from cci_builtin_plugins.incus.container import IncusContainer

    name = str(agent_config.get(AGENT_PROXY_KEY, ""))
    if not name.startswith(PREFIX):
        return
    try:
        instance = api.get(f"/1.0/instances/{quote(name)}", f"looking up proxy {name}")
    except APINotFound:
        raise BackendError(f"the proxy {name} of this container is gone",
                           hint="start a new session: its network and proxy are made again") from None
    if not is_proxy(instance.get("config") or {}):
        return
    containers = ProxyContainers(api, "", socket_dir_of(api))
    instance = containers.settled(name, instance)  # (read after the agent's ask: its start)
    if str(instance.get("status")) != "Running":
        containers.start(IncusContainer(api, instance), str((instance.get("config") or {}).get(CONFIG_KEY, "")))


def _squid() -> Any:
    from cci_builtin_plugins.incus import squid

    return squid


def _digest(text: str) -> str:
    return sha256(text.encode()).hexdigest()[:16] if text else ""


def _log_lines(container: IncusContainer, *, follow: bool) -> Iterator[bytes]:
    """The lines of the access log; with ``follow``, then new ones as they come, until the caller stops.

    While the proxy runs, new lines come from ``tail -F`` in it (which follows the log's rotation);
    while it is stopped (no container uses it), nothing new can come: its status is checked every second.
    """
    seen = 0
    while True:
        if follow and container.status() == "running":
            for line in _tail(container, seen):
                seen += 1
                yield line
            continue  # tail ended: the proxy stopped
        count = 0
        for count, line in enumerate(_copied_lines(container), start=1):
            if count > seen:
                yield line
        seen = max(seen, count)
        if not follow:
            return
        time.sleep(1.0)


def _copied_lines(container: IncusContainer) -> Iterator[bytes]:
    """The access log's lines, read from a private copy on the host: an agent can make the log larger (between two
    rotations) than cci reads into memory."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="cci-proxy-log-") as directory:
        copy = Path(directory, "access.log")
        try:
            container.pull_file_to(_squid().ACCESS_LOG, copy)
        except APINotFound:
            return
        with copy.open("rb") as lines:
            for line in lines:
                yield line.rstrip(b"\n")


def _tail(container: IncusContainer, skip: int) -> Iterator[bytes]:
    """The log's lines after the first ``skip``, then new ones as they come, read in another thread, until
    the proxy stops."""
    import queue
    import threading

    lines: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=10000)
    pending = bytearray()

    def take(chunk: bytes) -> None:
        pending.extend(chunk)
        *done, rest = bytes(pending).split(b"\n")
        pending[:] = rest
        for line in done:
            lines.put(line)

    def run() -> None:
        try:
            container.exec(["tail", "-n", f"+{skip + 1}", "-F", _squid().ACCESS_LOG], stdout=take,
                           stderr=lambda _chunk: None)
            lines.put(None)
        except BaseException as exc:  # noqa: BLE001 - given to the reader
            lines.put(exc)

    threading.Thread(target=run, daemon=True, name="cci-network-log").start()
    while True:
        item = lines.get()
        if item is None:
            return
        if isinstance(item, APIError):
            return  # the proxy stopped meanwhile (or was never running)
        if isinstance(item, BaseException):
            raise item
        yield item


def _secret_list(config: Mapping[str, Any]) -> list[str]:
    return [item for item in str(config.get(SECRETS_KEY, "")).split(",") if item]


def is_proxy(config: Mapping[str, Any]) -> bool:
    """Whether an instance config marks a proxy container."""
    return str(config.get(LABEL_PREFIX + "kind", "")) == KIND


def spec_json(spec: ProxySpec) -> str:
    """``spec`` as JSON (kept with the plan in its network ACL)."""
    return json.dumps({"rules": [list(rule) for rule in spec.rules], "hosts": dict(spec.hosts)}, sort_keys=True)


def spec_of(text: str) -> ProxySpec | None:
    """The spec :func:`spec_json` wrote (None: none, or unreadable)."""
    from cci_core.api import HostRule

    if not text:
        return None
    try:
        document = json.loads(text)
        rules = tuple(HostRule(action, pattern, tuple(ports), source)
                      for action, pattern, ports, source in document["rules"])
        return ProxySpec(rules, dict(document.get("hosts") or {}))
    except (ValueError, TypeError, KeyError):
        return None
