"""The typed sections of the cci configuration; the schema is written once, here.

Each ``[section]`` of ``config.toml`` is a frozen dataclass. Validation, the
``CCI_*`` environment variables and the rendered output are all derived from
the field type hints and the field metadata (``help``, ``check``,
``deprecated`` and, for profiles, ``target``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Mapping, Optional, get_args, get_origin, get_type_hints

Check = Callable[[Any], Optional[str]]
"""Returns an error message for a well-typed but unacceptable value, else ``None``."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def non_empty(value: str) -> str | None:
    """Reject an empty or blank string."""
    return None if value.strip() else "must not be empty"


def non_negative(value: int) -> str | None:
    """Reject a negative integer."""
    return None if value >= 0 else f"must be 0 or more, got {value}"


def env_names(value: Mapping[str, str]) -> str | None:
    """Reject a table whose keys are not valid environment variable names."""
    for name in value:
        if not _ENV_NAME.match(name):
            return f"invalid environment variable name {name!r} (must match [A-Za-z_][A-Za-z0-9_]*)"
    return None


def setting(
    default: Any,
    help: str,
    *,
    check: Check | None = None,
    deprecated: str | None = None,
    target: str | None = None,
) -> Any:
    """Declare one config key with its default, help text and optional check."""
    metadata = {"help": help, "check": check, "deprecated": deprecated, "target": target}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DefaultsConfig:
    """``[defaults]``: how sessions and containers are launched."""

    image: str = setting("cci", "Container image to launch.", check=non_empty)
    persistent: bool = setting(False, "Keep the container between sessions.")
    mount_claude_config: bool = setting(True, "Mount the host tool configuration into the container.")
    environment: dict[str, str] = setting({}, "Extra environment variables passed into containers.", check=env_names)
    driver: str = setting("incus", "Container backend plugin to use.", check=non_empty)


@dataclass(frozen=True)
class ToolConfig:
    """``[tool]``: the AI coding agent run inside the container."""

    name: str = setting("claude", "Tool plugin to run.", check=non_empty)
    binary: str | None = setting(None, "Override the tool's binary name.")


@dataclass(frozen=True)
class PathsConfig:
    """``[paths]``: host directories used by cci."""

    sessions_dir: str = setting(
        "~/.cci/sessions",
        "Legacy sessions directory (not used).",
        deprecated="sessions are stored in ~/.cci/sessions-<tool>/",
    )
    storage_dir: str = setting("~/.cci/storage", "Persistent storage directory.", check=non_empty)


@dataclass(frozen=True)
class IncusConfig:
    """``[incus]``: how cci talks to the Incus daemon."""

    project: str = setting("default", "Incus project holding cci containers.", check=non_empty)
    group: str = setting("incus-admin", "Host group allowed to use Incus.", check=non_empty)
    claude_uid: int = setting(1000, "UID of the tool user inside the container.", check=non_negative)
    socket: str | None = setting(None, "Path of the Incus unix socket (default: auto-detect).")


@dataclass(frozen=True)
class NetworkConfig:
    """``[network]``: the container network policy (modes come from plugins)."""

    mode: str = setting("restricted", "Network policy plugin to apply.", check=non_empty)
    allowed_domains: list[str] = setting([], "Domains and IPv4 addresses reachable in allowlist mode.")
    refresh_interval_minutes: int = setting(30, "Allowlist IP refresh interval (0 disables).", check=non_negative)


@dataclass(frozen=True)
class ProfileConfig:
    """``[profiles.NAME]``: optional settings applied on top of the files when selected."""

    image: str | None = setting(None, "Container image.", target="defaults.image")
    persistent: bool | None = setting(None, "Keep the container.", target="defaults.persistent")
    mount_claude_config: bool | None = setting(
        None, "Mount the host tool configuration.", target="defaults.mount_claude_config"
    )
    environment: dict[str, str] | None = setting(
        None, "Environment variables added to defaults.environment.", target="defaults.environment"
    )
    tool: str | None = setting(None, "Tool plugin to run.", target="tool.name")
    network: str | None = setting(None, "Network policy plugin.", target="network.mode")


@dataclass(frozen=True)
class PluginListsConfig:
    """The plugin switches of ``[plugins]``; the other keys are per-plugin tables."""

    disabled: list[str] = setting([], "Plugins not to load.")
    enabled: list[str] = setting([], "Plugins re-enabled after a lower layer disabled them.")


@dataclass(frozen=True)
class PluginsConfig:
    """The merged ``[plugins]`` section: disabled plugin names and per-plugin settings."""

    disabled: frozenset[str] = frozenset()
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


SECTIONS: dict[str, type] = {
    "defaults": DefaultsConfig,
    "tool": ToolConfig,
    "paths": PathsConfig,
    "incus": IncusConfig,
    "network": NetworkConfig,
}
"""The plain sections, in display order; each is an attribute of the same name on ``Config``."""

RESERVED_ENV = frozenset({"CCI_DEBUG", "CCI_TRACE_HOOKS", "CCI_PROFILE"})
"""``CCI_*`` variables that are not config keys (``CCI_TEST_*`` are reserved too)."""


@dataclass(frozen=True)
class FieldSpec:
    """One config key as derived from a schema dataclass field."""

    section: str
    name: str
    type: Any
    default: Any
    help: str
    check: Check | None = None
    deprecated: str | None = None

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


def field_specs(section: str, cls: type) -> dict[str, FieldSpec]:
    """Describe the fields of one schema dataclass, keyed by dotted key."""
    hints = get_type_hints(cls)
    specs = {}
    for f in fields(cls):
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        spec = FieldSpec(section, f.name, hints[f.name], default, f.metadata["help"], f.metadata["check"],
                         f.metadata["deprecated"])
        specs[spec.key] = spec
    return specs


SETTINGS: dict[str, FieldSpec] = {
    key: spec for section, cls in SECTIONS.items() for key, spec in field_specs(section, cls).items()
}
"""Every plain config key, in schema order."""

PLUGIN_LISTS: dict[str, FieldSpec] = field_specs("plugins", PluginListsConfig)
"""``plugins.disabled`` and ``plugins.enabled``."""

PROFILE_TARGETS: dict[str, FieldSpec] = {f.name: SETTINGS[f.metadata["target"]] for f in fields(ProfileConfig)}
"""Profile key -> the setting it overrides (and whose type and check it uses)."""

ENV_VARS: dict[str, FieldSpec] = {
    spec.env_var: spec for spec in (*SETTINGS.values(), *PLUGIN_LISTS.values()) if spec.env_var
}
"""``CCI_<SECTION>_<KEY>`` -> setting, for every key that is not a table."""
