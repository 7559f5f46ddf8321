"""The merged configuration handed to the rest of cci, and command-line overrides."""

# No ``from __future__ import annotations``: NamedTuple would compile every field hint as a ForwardRef.
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

from cci_core.config.schema import (
    CORE_SCHEMA,
    PLUGIN_LISTS,
    SECTIONS,
    DefaultsConfig,
    LimitsConfig,
    NetworkConfig,
    PathsConfig,
    PluginsConfig,
    PortsConfig,
    PoolConfig,
    SyncConfig,
    ReadinessConfig,
    ProfileConfig,
    Schema,
    SecretsConfig,
    SecurityConfig,
    ToolConfig,
)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Override(NamedTuple):
    """One command-line setting, e.g. ``Override("defaults.image", "x", "--image")``.

    ``key`` is a dotted config key (``defaults.environment`` takes a dict, or
    use ``defaults.environment.NAME``; ``plugins.<plugin>.<key>`` sets a plugin
    setting). A string ``value`` for a non-string key is parsed like an
    environment variable. ``source`` names the flag in messages. With ``extend``, a
    list ``value`` is added to the list the lower layers give (``--port``) instead of replacing it.
    """

    key: str
    value: Any
    source: str
    extend: bool = False


class Config(NamedTuple):
    """The configuration after merging every layer; see :func:`~cci_core.config.load_config`."""

    defaults: DefaultsConfig
    tool: ToolConfig
    paths: PathsConfig
    network: NetworkConfig
    security: SecurityConfig
    profiles: Mapping[str, ProfileConfig]
    plugins: PluginsConfig
    profile: str | None
    workspace: Path
    files: tuple[Path, ...]
    sources: Mapping[str, str] = _EMPTY
    """Dotted key -> where its value was set; :meth:`source_of` also answers for defaults."""
    workspace_digest: str = ""
    """SHA-256 of the workspace's ``.cci.toml`` as read, when it sets anything (see :mod:`cci_core.config.trust`)."""
    sections: Mapping[str, Any] = _EMPTY
    """The sections enabled plugins declared (``[incus]``...), by name; read them with :meth:`section`."""
    schema: Schema = CORE_SCHEMA
    """Every section and key this config was merged against."""
    secrets: SecretsConfig = SecretsConfig()
    """``[secrets]``: the host variables passed by placeholder."""
    limits: LimitsConfig = LimitsConfig()
    """``[limits]``: what one session container may use."""
    ports: PortsConfig = PortsConfig()
    """``[ports]``: container ports published on the host."""
    pool: PoolConfig = PoolConfig()
    """``[pool]``: started containers kept ready for ephemeral launches."""
    readiness: ReadinessConfig = ReadinessConfig()
    sync: SyncConfig = SyncConfig()
    """``[sync]``: the workspace copied to a server that cannot mount it, and back."""

    def section(self, name: str) -> Any:
        """The ``[name]`` section: a core one (``network``...) or one an enabled plugin declared.

        Raises :class:`~cci_core.errors.NotAvailableError` for a section nobody declared
        (its plugin is disabled or not installed).
        """
        if name in SECTIONS:
            return getattr(self, name)
        try:
            return self.sections[name]
        except KeyError:
            from cci_core.errors import NotAvailableError

            declared = ", ".join(sorted({*SECTIONS, *self.sections}))
            raise NotAvailableError(
                f"config section [{name}] is not declared by any enabled plugin (its plugin may be disabled or not "
                f"installed); declared: {declared}"
            ) from None

    def source_of(self, dotted_key: str) -> str:
        """Where the value of ``dotted_key`` came from: ``default``, ``path:line``, ``env CCI_X``, a flag...

        Also answers for a key's other name (``incus.claude_uid``), for
        ``defaults.environment.NAME`` and ``plugins.<plugin>.<key>`` values that were set, and for
        item N of a list, ``ports.publish[N]`` (a flag may add items to what the files give).
        Raises ``KeyError`` for anything else.
        """
        if dotted_key in self.sources:
            return self.sources[dotted_key]
        if dotted_key.endswith("]") and "[" in dotted_key:  # an item of a list no flag extended: the list's
            return self.source_of(dotted_key.partition("[")[0])
        if dotted_key in self.schema.settings or dotted_key in PLUGIN_LISTS:
            return "default"
        spec = self.schema.lookup(*dotted_key.split(".", 1)) if "." in dotted_key else None
        if spec is not None:  # a key's other name (``incus.claude_uid``)
            return self.source_of(spec.key)
        raise KeyError(f"{dotted_key!r} is not a config key or was not set")

    def plugin_settings(self, name: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` settings (empty if none)."""
        return self.plugins.settings.get(name, _EMPTY)
