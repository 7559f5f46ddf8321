"""The typed sections of the cci configuration; the schema is written once, here.

Each ``[section]`` of ``config.toml`` is a ``NamedTuple`` (cheaper to create at
import than a frozen dataclass). Each key is annotated
``Annotated[type, Setting(help, check=..., deprecated=..., target=...)]``;
validation, the ``CCI_*`` environment variables and the rendered output are
all derived from these annotations and the field defaults.

List and dict defaults are shared by every instance: never mutate them (the
loader hands out copies).
"""

import re
from types import MappingProxyType
from typing import Annotated, Any, Callable, Iterator, Mapping, NamedTuple, Optional, get_args, get_origin

Check = Callable[[Any], Optional[str]]
"""Returns an error message for a well-typed but unacceptable value, else ``None``."""

_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*\Z"  # compiled on first use (re caches it)


def non_empty(value: str) -> str | None:
    """Reject an empty or blank string."""
    return None if value.strip() else "must not be empty"


def non_negative(value: int) -> str | None:
    """Reject a negative integer."""
    return None if value >= 0 else f"must be 0 or more, got {value}"


def env_names(value: Mapping[str, str]) -> str | None:
    """Reject a table whose keys are not valid environment variable names."""
    for name in value:
        if not re.match(_ENV_NAME, name):
            return f"invalid environment variable name {name!r} (must match [A-Za-z_][A-Za-z0-9_]*)"
    return None


def https_url(value: str) -> str | None:
    """Reject anything but an ``https://`` URL."""
    return None if value.startswith("https://") and len(value) > len("https://") else "must be an https:// URL"


def subnet_pool(value: str) -> str | None:
    """Accept ``auto`` or an IPv4 network of /24 or larger."""
    if value == "auto":
        return None
    import ipaddress

    try:
        network = ipaddress.IPv4Network(value)
    except ValueError:
        return f"must be 'auto' or an IPv4 range such as 10.150.0.0/16, got {value!r}"
    return None if network.prefixlen <= 24 else f"must be a /24 or larger range, got /{network.prefixlen}"


def workspace_paths(value: list[str]) -> str | None:
    """Reject entries that are not plain relative paths inside the workspace (``.git/hooks``, ``.envrc``)."""
    for entry in value:
        parts = entry.split("/")
        if not entry or entry.startswith("/") or entry.endswith("/") or "" in parts or "\\" in entry:
            return f"{entry!r} is not a relative path: write a path inside the workspace (e.g. .git/hooks)"
        if any(part in (".", "..") for part in parts) or any(ord(char) < 32 for char in entry):
            return (f"{entry!r} has a '.' or '..' part or a control character: write a path inside the "
                    "workspace (e.g. .git/hooks)")
    return None


class Setting:
    """The metadata of one config key: its help text, an optional check, deprecation note and profile target."""

    __slots__ = ("help", "check", "deprecated", "target")

    def __init__(
        self, help: str, *, check: Check | None = None, deprecated: str | None = None, target: str | None = None
    ) -> None:
        self.help = help
        self.check = check
        self.deprecated = deprecated
        self.target = target


class DefaultsConfig(NamedTuple):
    """``[defaults]``: how sessions and containers are launched."""

    image: Annotated[str, Setting("Container image to launch.", check=non_empty)] = "cci"
    persistent: Annotated[bool, Setting("Keep the container between sessions.")] = False
    mount_claude_config: Annotated[bool, Setting("Mount the host tool configuration into the container.")] = True
    environment: Annotated[
        dict[str, str], Setting("Extra environment variables passed into containers.", check=env_names)
    ] = {}
    driver: Annotated[str, Setting("Container backend plugin to use.", check=non_empty)] = "incus"


class ToolConfig(NamedTuple):
    """``[tool]``: the AI coding agent run inside the container."""

    name: Annotated[str, Setting("Tool plugin to run.", check=non_empty)] = "claude"
    binary: Annotated[str | None, Setting("Override the tool's binary name.")] = None


class PathsConfig(NamedTuple):
    """``[paths]``: host directories used by cci."""

    sessions_dir: Annotated[
        str,
        Setting("Legacy sessions directory (not used).", deprecated="sessions are stored in ~/.cci/sessions-<tool>/"),
    ] = "~/.cci/sessions"
    storage_dir: Annotated[str, Setting("Persistent storage directory.", check=non_empty)] = "~/.cci/storage"


class IncusConfig(NamedTuple):
    """``[incus]``: how cci talks to the Incus daemon."""

    project: Annotated[str, Setting("Incus project holding cci containers.", check=non_empty)] = "default"
    group: Annotated[str, Setting("Host group allowed to use Incus.", check=non_empty)] = "incus-admin"
    claude_uid: Annotated[int, Setting("UID of the tool user inside the container.", check=non_negative)] = 1000
    socket: Annotated[str | None, Setting("Path of the Incus unix socket (default: auto-detect).")] = None
    url: Annotated[str | None, Setting("HTTPS endpoint of a remote Incus, e.g. https://host:8443.", check=https_url)] = None
    client_cert: Annotated[str | None, Setting("Client certificate (PEM) for a remote Incus.")] = None
    client_key: Annotated[str | None, Setting("Client key (PEM) for a remote Incus.")] = None
    server_cert: Annotated[str | None, Setting("Server certificate (PEM) to trust; default: the system CAs.")] = None
    network_nat: Annotated[
        bool, Setting("Masquerade the traffic of the networks cci makes for network policies.")
    ] = True
    network_subnets: Annotated[
        str, Setting("Where those networks take their IPv4 /24s: auto (Incus picks), or a range like 10.150.0.0/16.",
                     check=subnet_pool)
    ] = "auto"
    network_filtering: Annotated[
        bool, Setting("Drop what a container sends from a MAC or IPv4 address not its own (anti-spoofing).")
    ] = True


class NetworkConfig(NamedTuple):
    """``[network]``: the container network policy (modes come from plugins)."""

    mode: Annotated[str, Setting("Network policy plugin to apply.", check=non_empty)] = "restricted"
    allowed_domains: Annotated[list[str], Setting("Domains and IPv4 addresses reachable in allowlist mode.")] = []
    refresh_interval_minutes: Annotated[
        int, Setting("Allowlist IP refresh interval (0 disables).", check=non_negative)
    ] = 30


class SecurityConfig(NamedTuple):
    """``[security]``: what the container may not change in the workspace (see docs/security.md)."""

    protected_paths: Annotated[
        list[str], Setting("Workspace paths mounted read-only into sessions; [] protects none.", check=workspace_paths)
    ] = [".git/config", ".git/hooks", ".envrc", ".vscode", ".idea", ".devcontainer"]


class ProfileConfig(NamedTuple):
    """``[profiles.NAME]``: optional settings applied on top of the files when selected.

    Each key takes the type and check of the setting it ``target``\\ s.
    """

    image: Annotated[str | None, Setting("Container image.", target="defaults.image")] = None
    persistent: Annotated[bool | None, Setting("Keep the container.", target="defaults.persistent")] = None
    mount_claude_config: Annotated[
        bool | None, Setting("Mount the host tool configuration.", target="defaults.mount_claude_config")
    ] = None
    environment: Annotated[
        dict[str, str] | None,
        Setting("Environment variables added to defaults.environment.", target="defaults.environment"),
    ] = None
    tool: Annotated[str | None, Setting("Tool plugin to run.", target="tool.name")] = None
    network: Annotated[str | None, Setting("Network policy plugin.", target="network.mode")] = None


class PluginListsConfig(NamedTuple):
    """The plugin switches of ``[plugins]``; the other keys are per-plugin tables."""

    disabled: Annotated[list[str], Setting("Plugins not to load.")] = []
    enabled: Annotated[list[str], Setting("Plugins re-enabled after a lower layer disabled them.")] = []


class PluginsConfig(NamedTuple):
    """The merged ``[plugins]`` section: disabled plugin names and per-plugin settings."""

    disabled: frozenset[str] = frozenset()
    settings: Mapping[str, Mapping[str, Any]] = MappingProxyType({})


SECTIONS: dict[str, type] = {
    "defaults": DefaultsConfig,
    "tool": ToolConfig,
    "paths": PathsConfig,
    "incus": IncusConfig,
    "network": NetworkConfig,
    "security": SecurityConfig,
}
"""The plain sections, in display order; each is an attribute of the same name on ``Config``."""

RESERVED_ENV = frozenset({"CCI_DEBUG", "CCI_TRACE_HOOKS", "CCI_PROFILE", "CCI_SG_GROUP"})
"""``CCI_*`` variables that are not config keys (``CCI_TEST_*`` are reserved too)."""


class FieldSpec(NamedTuple):
    """One config key as derived from a schema field."""

    section: str
    name: str
    type: Any
    default: Any
    help: str
    check: Optional[Check] = None
    deprecated: Optional[str] = None

    @property
    def key(self) -> str:
        """The dotted key, e.g. ``defaults.image``."""
        return f"{self.section}.{self.name}"

    @property
    def env_var(self) -> str | None:
        """The ``CCI_*`` variable setting this key, ``None`` for tables."""
        return None if self.is_table else f"CCI_{self.section}_{self.name}".upper()

    @property
    def is_table(self) -> bool:
        """Whether values are ``dict`` tables merged per key across layers."""
        return get_origin(self.type) is dict or any(get_origin(arg) is dict for arg in get_args(self.type))


def _settings(cls: type) -> Iterator[tuple[str, Any, Setting]]:
    """``(name, type, setting)`` for each field of a schema class, from its ``Annotated`` hints.

    The hints are real objects (this module does not postpone annotations), so
    ``__annotations__`` serves and ``get_type_hints`` (~0.1 ms a class) is not needed.
    """
    for name, hint in cls.__annotations__.items():
        tp, setting = get_args(hint)
        yield name, tp, setting


def field_specs(section: str, cls: type) -> dict[str, FieldSpec]:
    """Describe the fields of one schema class, keyed by dotted key."""
    defaults = cls._field_defaults  # type: ignore[attr-defined]
    specs = {}
    for name, tp, s in _settings(cls):
        spec = FieldSpec(section, name, tp, defaults[name], s.help, s.check, s.deprecated)
        specs[spec.key] = spec
    return specs


SETTINGS: dict[str, FieldSpec] = {
    key: spec for section, cls in SECTIONS.items() for key, spec in field_specs(section, cls).items()
}
"""Every plain config key, in schema order."""

PLUGIN_LISTS: dict[str, FieldSpec] = field_specs("plugins", PluginListsConfig)
"""``plugins.disabled`` and ``plugins.enabled``."""

PROFILE_TARGETS: dict[str, FieldSpec] = {name: SETTINGS[s.target] for name, _, s in _settings(ProfileConfig)}
"""Profile key -> the setting it overrides (and whose type and check it uses)."""

ENV_VARS: dict[str, FieldSpec] = {
    spec.env_var: spec for spec in (*SETTINGS.values(), *PLUGIN_LISTS.values()) if spec.env_var
}
"""``CCI_<SECTION>_<KEY>`` -> setting, for every key that is not a table."""
