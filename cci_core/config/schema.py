"""The typed sections of the cci configuration: the core's are written here, plugins declare theirs alike.

Each ``[section]`` of ``config.toml`` is a ``NamedTuple`` (cheaper to create at
import than a frozen dataclass). Each key is annotated
``Annotated[type, Setting(help, check=..., deprecated=..., target=..., aliases=...)]``;
validation, the ``CCI_*`` environment variables and the rendered output are
all derived from these annotations and the field defaults. A plugin declares a
section of its own with ``register.add_settings(name, cls)``; a :class:`Schema`
holds the core's sections and those of the enabled plugins.

List and dict defaults are shared by every instance: never mutate them (the
loader hands out copies).
"""

import re
from functools import partial
from types import MappingProxyType
from typing import Annotated, Any, Callable, ForwardRef, Iterator, Mapping, NamedTuple, Optional, get_args, get_origin

from cci_core.limits import check_cpu, check_disk, check_duration, check_memory, check_save_size

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


def env_list(value: list[str]) -> str | None:
    """Reject a list whose entries are not valid environment variable names."""
    return env_names(dict.fromkeys(value))


def https_url(value: str) -> str | None:
    """Reject anything but an ``https://`` URL."""
    return None if value.startswith("https://") and len(value) > len("https://") else "must be an https:// URL"


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


def port_specs(value: list[str]) -> str | None:
    """Reject a published port that is not ``[ADDRESS:]HOST:CONTAINER``, or a host port given twice."""
    from cci_core.ports import check_specs

    return check_specs(value)


def ip_address(value: str) -> str | None:
    """Reject anything but an IP address a host can listen on."""
    from cci_core.ports import check_address_setting

    return check_address_setting(value)


class Setting:
    """The metadata of one config key: help text, optional check, deprecation note, profile target and aliases.

    ``aliases`` are other names of the key, accepted wherever the key is (files, profiles,
    ``CCI_*`` variables, overrides) without a warning; the key's own name is the one shown.
    """

    __slots__ = ("help", "check", "deprecated", "target", "aliases")

    def __init__(
        self, help: str, *, check: Check | None = None, deprecated: str | None = None, target: str | None = None,
        aliases: tuple[str, ...] = (),
    ) -> None:
        self.help = help
        self.check = check
        self.deprecated = deprecated
        self.target = target
        self.aliases = aliases


class DefaultsConfig(NamedTuple):
    """``[defaults]``: how sessions and containers are launched."""

    image: Annotated[str, Setting("Container image to launch.", check=non_empty)] = "cci"
    persistent: Annotated[bool, Setting("Keep the container between sessions.")] = False
    inject_credentials: Annotated[
        bool, Setting("Copy the host tool's configuration and credentials into the container.",
                      aliases=("mount_claude_config",))
    ] = True
    environment: Annotated[
        dict[str, str], Setting("Extra environment variables passed into containers.", check=env_names)
    ] = {}
    driver: Annotated[str, Setting("Container backend plugin to use.", check=non_empty)] = "incus"
    snapshot_on_start: Annotated[
        bool, Setting("Snapshot a persistent container each time a session starts it again (cci snapshot).")
    ] = False
    snapshot_keep: Annotated[
        int, Setting("Automatic snapshots kept per container (older ones are deleted).", check=non_negative)
    ] = 5

    @property
    def mount_claude_config(self) -> bool:
        """``inject_credentials`` under the spec's name (plugins written before the tool-neutral name read it)."""
        return self.inject_credentials


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
    storage_dir: Annotated[
        str,
        Setting("Persistent storage directory (not used).",
                deprecated="--storage takes host paths; there is no storage directory of cci's own"),
    ] = "~/.cci/storage"


class NetworkConfig(NamedTuple):
    """``[network]``: the container network policy (modes come from plugins)."""

    mode: Annotated[str, Setting("Network policy plugin to apply.", check=non_empty)] = "restricted"
    allowed_domains: Annotated[
        list[str], Setting("Hosts reachable in allowlist and proxy mode: names, *.x / .x patterns, addresses, :PORT.")
    ] = []
    refresh_interval_minutes: Annotated[
        int, Setting("Allowlist IP refresh interval (0 disables).", check=non_negative)
    ] = 30
    denied_domains: Annotated[
        list[str], Setting("Hosts the proxy mode refuses, whatever allows them (same forms as allowed_domains).")
    ] = []
    presets: Annotated[list[str], Setting("Named host lists the proxy mode allows (cci network presets).")] = []
    hosts: Annotated[
        dict[str, str], Setting("Names the proxy resolves itself: { \"name\" = \"public address\" }.")
    ] = {}
    proxy_trust_ca: Annotated[
        str, Setting("PEM file of extra CA certificates the proxy trusts toward credential hosts (\"\": the system's).")
    ] = ""
    proxy_image: Annotated[str, Setting("Image alias of the proxy container.", check=non_empty)] = "cci-proxy"


class SecurityConfig(NamedTuple):
    """``[security]``: what the container may not change in the workspace (see docs/security.md)."""

    protected_paths: Annotated[
        list[str], Setting("Workspace paths mounted read-only into sessions; [] protects none.", check=workspace_paths)
    ] = [".git/config", ".git/hooks", ".envrc", ".vscode", ".idea", ".devcontainer"]


class SecretsConfig(NamedTuple):
    """``[secrets]``: host variables passed by placeholder under a plan with a proxy (see docs/security.md)."""

    env: Annotated[
        list[str], Setting("Host environment variables passed by placeholder (proxy mode).", check=env_list)
    ] = []
    hosts: Annotated[
        dict[str, list[str]], Setting("Hosts each secret may be sent to: { NAME = [\"api.example.com\"] }.",
                                      check=env_names)
    ] = {}
    headers: Annotated[
        dict[str, list[str]], Setting("Headers carrying each secret, {} for the value: { NAME = [\"X-Key: {}\"] }.",
                                      check=env_names)
    ] = {}


class LimitsConfig(NamedTuple):
    """``[limits]``: what one session container may use, enforced by the driver (see docs/sessions.md, *Limits*)."""

    cpu: Annotated[str, Setting("CPUs a session may use: a count (2) or a set (0-3); \"\": all.", check=check_cpu)] = ""
    memory: Annotated[str, Setting("Memory a session may use (4GiB, 50% of the host's); \"\": no limit.",
                                   check=check_memory)] = "50%"
    processes: Annotated[int, Setting("Processes (and threads) a session may run at once; 0: no limit.",
                                      check=non_negative)] = 10000
    disk: Annotated[str, Setting("Size of a session's root disk (20GiB); \"\": the storage pool's default.",
                                 check=check_disk)] = "20GiB"
    duration: Annotated[str, Setting("Longest a session may run (8h, 90m, 1h30m); \"\": no limit.",
                                     check=check_duration)] = ""
    save_size: Annotated[str, Setting("Largest saved session (2GiB): a save stops there, with a warning.",
                                      check=check_save_size)] = "2GiB"


class PortsConfig(NamedTuple):
    """``[ports]``: container ports published on the host (see docs/sessions.md)."""

    publish: Annotated[
        list[str], Setting("Ports published from every session: [ADDRESS:]HOST:CONTAINER.", check=port_specs)
    ] = []
    address: Annotated[
        str, Setting("Host address a published port binds to when it names none.", check=ip_address)
    ] = "127.0.0.1"


def in_range(low: int, high: int, unit: str = "", why: str = "") -> Check:
    """A check of an integer setting: from ``low`` to ``high`` (``unit`` after the numbers, ``why`` in brackets).
    (A partial of a module's function: a config is pickled for the processes that carry a session's end on.)"""
    return partial(_check_range, low, high, unit, why)


def _check_range(low: int, high: int, unit: str, why: str, value: int) -> str | None:
    if low <= value <= high:
        return None
    return f"must be {low} to {high}{unit}, got {value}" + (f" ({why})" if why else "")


#: the most warm containers ``[pool] size`` may keep for one image and policy
MAX_POOL_SIZE = 16


class PoolConfig(NamedTuple):
    """``[pool]``: started containers kept ready for ephemeral launches (see docs/sessions.md, *Warm pool*)."""

    size: Annotated[int, Setting("Containers kept started, per image and network policy, for ephemeral launches to "
                                 "take; 0: none.",
                                 check=in_range(0, MAX_POOL_SIZE, why="each pooled container takes memory while it "
                                                                      "waits"))] = 0


class SyncConfig(NamedTuple):
    """``[sync]``: the workspace copied into containers on a server that cannot mount it (a remote Incus), and
    back at every save (see docs/configuration.md, *Remote Incus*)."""

    exclude: Annotated[list[str], Setting(".gitignore-style patterns left out both ways (node_modules/, *.log, "
                                          "/build/out).")] = []
    max_size: Annotated[str, Setting("Largest workspace copied (10GiB): a larger one is refused, a copy back stops.",
                                     check=check_save_size)] = "10GiB"


#: the longest ``[readiness] timeout``: an hour
MAX_READY_TIMEOUT = 3600


class ReadinessConfig(NamedTuple):
    """``[readiness]``: waiting for a started container to be ready, booted and on its network (docs/sessions.md)."""

    wait: Annotated[bool, Setting("cci run waits until the container is ready (booted, its network up) before the "
                                  "command; false: it starts the command at once, as --no-wait.")] = True
    timeout: Annotated[int, Setting("Seconds a launch waits for the container to be ready; then cci run fails, "
                                    "cci shell and attach go on with a warning.", check=in_range(1, MAX_READY_TIMEOUT, " seconds"))] = 60


class ProfileConfig(NamedTuple):
    """``[profiles.NAME]``: optional settings applied on top of the files when selected.

    Each key takes the type and check of the setting it ``target``\\ s.
    """

    image: Annotated[str | None, Setting("Container image.", target="defaults.image")] = None
    persistent: Annotated[bool | None, Setting("Keep the container.", target="defaults.persistent")] = None
    inject_credentials: Annotated[
        bool | None, Setting("Copy the host tool's credentials in.", target="defaults.inject_credentials",
                             aliases=("mount_claude_config",))
    ] = None
    environment: Annotated[
        dict[str, str] | None,
        Setting("Environment variables added to defaults.environment.", target="defaults.environment"),
    ] = None
    tool: Annotated[str | None, Setting("Tool plugin to run.", target="tool.name")] = None
    network: Annotated[str | None, Setting("Network policy plugin.", target="network.mode")] = None

    @property
    def mount_claude_config(self) -> bool | None:
        """``inject_credentials`` under the spec's name (see :attr:`DefaultsConfig.mount_claude_config`)."""
        return self.inject_credentials


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
    "network": NetworkConfig,
    "security": SecurityConfig,
    "secrets": SecretsConfig,
    "limits": LimitsConfig,
    "ports": PortsConfig,
    "pool": PoolConfig,
    "readiness": ReadinessConfig,
    "sync": SyncConfig,
}
"""The core's plain sections, in display order; each is an attribute of the same name on ``Config``.

Plugins declare sections of their own (``register.add_settings``); :class:`Schema` holds both."""

RESERVED_SECTIONS = frozenset({*SECTIONS, "profiles", "plugins"})
"""Top-level names no plugin may declare a section under."""

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
    aliases: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The dotted key, e.g. ``defaults.image``."""
        return f"{self.section}.{self.name}"

    @property
    def env_var(self) -> str | None:
        """The ``CCI_*`` variable setting this key, ``None`` for tables."""
        return None if self.is_table else env_var(self.section, self.name)

    @property
    def is_table(self) -> bool:
        """Whether values are ``dict`` tables merged per key across layers."""
        return get_origin(self.type) is dict or any(get_origin(arg) is dict for arg in get_args(self.type))


def env_var(section: str, name: str) -> str:
    """``CCI_<SECTION>_<NAME>``, upper case."""
    return f"CCI_{section}_{name}".upper()


def _settings(cls: type) -> Iterator[tuple[str, Any, Setting]]:
    """``(name, type, setting)`` for each field of a schema class, from its ``Annotated`` hints.

    The hints of the core's classes are real objects (this module does not postpone
    annotations), so ``__annotations__`` serves and ``get_type_hints`` (~0.1 ms a class)
    is needed only for a plugin's module that postpones them.
    """
    hints = cls.__annotations__
    if any(isinstance(hint, (str, ForwardRef)) for hint in hints.values()):  # ``from __future__ import annotations``
        import typing

        hints = typing.get_type_hints(cls, include_extras=True)
    for name, hint in hints.items():
        args = get_args(hint)
        if len(args) != 2 or not isinstance(args[1], Setting):
            raise TypeError(f"key {name!r} is not annotated Annotated[type, Setting(...)]")
        yield name, args[0], args[1]


def field_specs(section: str, cls: type) -> dict[str, FieldSpec]:
    """Describe the fields of one schema class, keyed by dotted key."""
    defaults = cls._field_defaults  # type: ignore[attr-defined]
    specs = {}
    for name, tp, s in _settings(cls):
        if name not in defaults:
            raise TypeError(f"key {name!r} has no default value")
        spec = FieldSpec(section, name, tp, defaults[name], s.help, s.check, s.deprecated, s.aliases)
        specs[spec.key] = spec
    return specs


class Schema:
    """Every section and key one configuration is merged against: the core's and the enabled plugins'.

    :param plugin_sections: section name -> ``(NamedTuple class, plugin name)``, in registration order.
    """

    def __init__(self, plugin_sections: Mapping[str, tuple[type, str]] = MappingProxyType({})) -> None:
        self.sections: dict[str, type] = {**SECTIONS, **{name: cls for name, (cls, _) in plugin_sections.items()}}
        self.owners: dict[str, str] = {name: plugin for name, (_, plugin) in plugin_sections.items()}
        """Plugin section -> the plugin that declared it."""
        if plugin_sections:
            self.settings = {**SETTINGS}
            for section, (cls, _) in plugin_sections.items():
                self.settings.update(field_specs(section, cls))
        else:
            self.settings = SETTINGS
        self.env_vars: dict[str, FieldSpec] = {
            spec.env_var: spec for spec in (*self.settings.values(), *PLUGIN_LISTS.values()) if spec.env_var
        }
        self.env_aliases: dict[str, tuple[FieldSpec, str]] = {
            env_var(spec.section, alias): (spec, alias)
            for spec in self.settings.values() if not spec.is_table for alias in spec.aliases
        }
        """``CCI_*`` variable of an alias -> ``(the key's spec, the alias)``."""
        if plugin_sections:
            self._check_env_vars()

    def _check_env_vars(self) -> None:
        """Refuse two keys (or aliases) whose ``CCI_*`` variables are one (``[a_b] c`` and ``[a] b_c``)."""
        seen: dict[str, str] = {}
        for spec in (*self.settings.values(), *PLUGIN_LISTS.values()):
            if spec.is_table:
                continue
            for name in (spec.name, *spec.aliases):
                variable, key = env_var(spec.section, name), f"{spec.section}.{name}"
                first = seen.setdefault(variable, key)
                if first != key:
                    from cci_core.errors import PluginError

                    owners = [self.owners.get(k.split(".")[0], "core") for k in (first, key)]
                    raise PluginError(f"config keys {first} (plugin {owners[0]!r}) and {key} (plugin {owners[1]!r}) "
                                      f"would both be set by {variable}",
                                      hint="rename the plugin's config section or key")

    def lookup(self, section: str, name: str) -> FieldSpec | None:
        """The spec of ``section.name``, or of the key ``name`` is an alias of; None if neither."""
        spec = self.settings.get(f"{section}.{name}")
        if spec is not None:
            return spec
        return next((s for s in self.settings.values() if s.section == section and name in s.aliases), None)

    def keys_of(self, section: str) -> list[str]:
        """The dotted keys of ``section`` and their aliases (for "did you mean")."""
        return [f"{section}.{name}" for s in self.settings.values() if s.section == section
                for name in (s.name, *s.aliases)]


def check_section_class(cls: Any) -> str | None:
    """Why ``cls`` cannot be a config section (a plugin's), or None if it can."""
    from cci_core.config.coerce import describe_type

    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_field_defaults")):
        return f"{cls!r} is not a NamedTuple class"
    try:
        specs = field_specs("section", cls)
        for spec in specs.values():
            describe_type(spec.type)
    except (TypeError, KeyError, IndexError, NameError) as exc:
        return f"{cls.__name__}: {exc}" if not isinstance(exc, KeyError) else f"{cls.__name__}: unsupported type"
    return None


SETTINGS: dict[str, FieldSpec] = {
    key: spec for section, cls in SECTIONS.items() for key, spec in field_specs(section, cls).items()
}
"""Every plain key of the core, in schema order (a :class:`Schema` adds the plugins')."""

PLUGIN_LISTS: dict[str, FieldSpec] = field_specs("plugins", PluginListsConfig)
"""``plugins.disabled`` and ``plugins.enabled``."""

PROFILE_TARGETS: dict[str, FieldSpec] = {name: SETTINGS[s.target] for name, _, s in _settings(ProfileConfig)}
"""Profile key -> the setting it overrides (and whose type and check it uses)."""

PROFILE_SECTIONS = ("limits",)
"""Sections a profile may set as a table of their own (``[profiles.NAME.limits]``), key by key."""

PROFILE_ALIASES: dict[str, str] = {alias: name for name, _, s in _settings(ProfileConfig) for alias in s.aliases}
"""Other name of a profile key -> the key."""

CORE_SCHEMA = Schema()
"""The core's sections alone."""

ENV_VARS: dict[str, FieldSpec] = CORE_SCHEMA.env_vars
"""``CCI_<SECTION>_<KEY>`` -> setting, for every key of the core that is not a table."""
