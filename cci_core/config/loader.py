"""Merge the config layers into a :class:`Config`, remembering where each value came from.

Layers, lowest precedence first: built-in defaults, the system file, the user
file, the workspace ``.cci.toml``, the selected ``[profiles.NAME]``, ``CCI_*``
environment variables and command-line overrides.

The files are read once (:func:`read_layers`); the ``[plugins]`` switches are taken
from the layers before any plugin loads (:meth:`ConfigLayers.disabled_plugins`); the
layers are merged (:meth:`ConfigLayers.merge`) against the core's sections and those
the enabled plugins declared.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from cci_core.config.coerce import Invalid, check_value, describe_value, parse_text
from cci_core.config.model import Config, Override
from cci_core.config.schema import (
    CORE_SCHEMA,
    PLUGIN_LISTS,
    PROFILE_ALIASES,
    PROFILE_SECTIONS,
    PROFILE_TARGETS,
    RESERVED_ENV,
    SECTIONS,
    FieldSpec,
    PluginsConfig,
    ProfileConfig,
    Schema,
)
from cci_core.config.sources import ConfigFile, display_path, read_config_file
from cci_core.errors import ConfigError

Warn = Callable[[str], None]

SYSTEM_FILE = Path("/etc/cci/config.toml")
WORKSPACE_FILE = ".cci.toml"


def user_config_file() -> Path:
    """The per-user config file: ``$XDG_CONFIG_HOME/cci/config.toml``, by default ``~/.config/cci/config.toml``
    (the XDG base directory rule, as platformdirs applies it on Linux; importing platformdirs costs every command
    a few milliseconds)."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return Path(base or os.path.expanduser("~/.config")) / "cci" / "config.toml"


def _warn_stderr(message: str) -> None:
    from cci_core.terminal_text import warn

    warn(message)


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _fresh(default: Any) -> Any:
    """A copy of a list or dict default (flat ones only), so no two configs share the schema's object."""
    return type(default)(default) if isinstance(default, (list, dict)) else default


def _validate(spec: FieldSpec, value: Any, source: str, key: str | None = None, *, text: bool = False) -> Any:
    """Type-check (or parse, if ``text``) a value for ``spec`` and run its check."""
    try:
        value = parse_text(spec.type, value) if text else check_value(spec.type, value)
    except Invalid as exc:
        raise ConfigError(str(exc), source=source, key=key or spec.key) from None
    problem = spec.check(value) if spec.check and value is not None else None
    if problem:
        raise ConfigError(problem, source=source, key=key or spec.key)
    return value


def check_text_setting(section: str, name: str, text: str) -> str | None:
    """Why ``text`` cannot set the core's key ``section.name`` (as a flag gives it), or None: unknown keys are named
    with a did-you-mean."""
    spec = CORE_SCHEMA.lookup(section, name)
    if spec is None:
        known = [key.partition(".")[2] for key in CORE_SCHEMA.keys_of(section)]
        return f"unknown key {name!r}{_did_you_mean(name, known)}: the keys are {', '.join(known)}"
    try:
        value = parse_text(spec.type, text)
    except Invalid as exc:
        return f"{name}: {exc}"
    problem = spec.check(value) if spec.check and value is not None else None
    return f"{name}: {problem}" if problem else None


def _pieces(spec: FieldSpec, value: Any, f: ConfigFile, *key: str) -> list[tuple[Any, str]]:
    """Split a checked value into ``(value, where)`` pieces: one per item for tables, so each keeps its line."""
    if spec.is_table:
        return [({name: item}, f.where(*key, name)) for name, item in value.items()]
    return [(value, f.where(*key))]


def _table(f: ConfigFile, value: Any, *key: str, what: str = "a table") -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected {what}, got {describe_value(value)}", source=f.where(*key), key=".".join(key))
    return value


class _Spellings:
    """The keys one layer (a file's table, a profile, the environment) set, to catch a key given under both names."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, Any]] = {}

    def check(self, canonical: str, spelled: str, value: Any, source: str, *, key: bool = True) -> None:
        """Refuse ``spelled`` when the same layer gave the key under its other name with another value
        (``key=False``: ``source`` names ``spelled`` already, as ``env CCI_...`` does)."""
        earlier = self.seen.setdefault(canonical, (spelled, value))
        if earlier[0] != spelled and earlier[1] != value:
            raise ConfigError(f"{earlier[0]} and {spelled} name the same setting and are given different values",
                              source=source, key=spelled if key else None, hint=f"keep only {canonical}")


class _Merger:
    """Accumulates layers in precedence order."""

    def __init__(self, schema: Schema, warn: Warn) -> None:
        self.schema = schema
        self.warn = warn
        self.values: dict[str, Any] = {key: _fresh(spec.default) for key, spec in schema.settings.items()}
        self.sources: dict[str, str] = {}
        self.profiles: dict[str, list[tuple[str, Any, str]]] = {}  # name -> (key, value, where), lowest first
        self.disabled: dict[str, bool] = {}
        self.plugin_settings: dict[str, dict[str, Any]] = {}
        self.ignored_sections: dict[str, str] = {}  # section -> where it was first seen

    # -- primitive updates ------------------------------------------------------------------------------

    def set(self, spec: FieldSpec, value: Any, source: str) -> None:
        """Set a key; tables are merged per key instead of replaced."""
        if spec.is_table:
            self.values[spec.key] = {**self.values[spec.key], **value}
            self.sources.update({f"{spec.key}.{name}": source for name in value})
        else:
            self.values[spec.key] = value
        self.sources[spec.key] = source

    def switch_plugins(self, spec: FieldSpec, names: list[str], source: str) -> None:
        """Apply ``plugins.disabled`` or ``plugins.enabled``: the last mention of a plugin wins."""
        for name in names:
            self.disabled[name] = spec.name == "disabled"
        self.sources[spec.key] = source
        self.sources["plugins.disabled"] = source  # the merged set changed here

    def set_plugin_setting(self, plugin: str, key: str, value: Any, source: str) -> None:
        self.plugin_settings.setdefault(plugin, {})[key] = value
        self.sources[f"plugins.{plugin}.{key}"] = source

    def _unknown(self, f: ConfigFile, key: tuple[str, ...], known: Iterable[str], kind: str = "key") -> None:
        dotted = ".".join(key)
        self.warn(f"{f.where(*key)}: unknown {kind} {dotted!r} is ignored{_did_you_mean(dotted, known)}")

    def warn_ignored_sections(self) -> None:
        """Warn once per section that neither the core nor an enabled plugin declared (where it first appeared)."""
        known = [*self.schema.sections, "profiles", "plugins"]
        for section, where in self.ignored_sections.items():
            disabled = f" (plugin {section!r} is disabled)" if self.disabled.get(section) else ""
            self.warn(f"{where}: unknown section {section!r} is ignored: it is not cci's and belongs to no enabled "
                      f"plugin{disabled or _did_you_mean(section, known)}")

    # -- layers -----------------------------------------------------------------------------------------

    def add_file(self, f: ConfigFile) -> None:
        """Apply one config file; its profiles are only collected."""
        for name, body in f.data.items():
            if name in self.schema.sections:
                self._add_section(f, name, body)
            elif name == "profiles":
                self._add_profiles(f, body)
            elif name == "plugins":
                self._add_plugins(f, body)
            elif isinstance(body, dict):
                self.ignored_sections.setdefault(name, f.where(name))
            else:
                self._unknown(f, (name,), [*self.schema.sections, "profiles", "plugins"])

    def _add_section(self, f: ConfigFile, section: str, body: Any) -> None:
        spellings = _Spellings()
        for name, value in _table(f, body, section).items():
            spec = self.schema.lookup(section, name)
            if spec is None:
                self._unknown(f, (section, name), self.schema.keys_of(section))
                continue
            where = f.where(section, name)
            value = _validate(spec, value, where, f"{section}.{name}")
            spellings.check(spec.key, f"{section}.{name}", value, where)
            for piece, place in _pieces(spec, value, f, section, name):
                self.set(spec, piece, place)

    def _add_profiles(self, f: ConfigFile, body: Any) -> None:
        for name, table in _table(f, body, "profiles").items():
            entries = self.profiles.setdefault(name, [])
            spellings = _Spellings()
            for spelled, value in _table(f, table, "profiles", name).items():
                if spelled in PROFILE_SECTIONS:
                    entries += self._profile_section(f, name, spelled, value)
                    continue
                key = PROFILE_ALIASES.get(spelled, spelled)
                spec = PROFILE_TARGETS.get(key)
                if spec is None:
                    known = (f"profiles.{name}.{k}" for k in (*PROFILE_TARGETS, *PROFILE_ALIASES, *PROFILE_SECTIONS))
                    self._unknown(f, ("profiles", name, spelled), known)
                    continue
                where = f.where("profiles", name, spelled)
                value = _validate(spec, value, where, f"profiles.{name}.{spelled}")
                spellings.check(f"profiles.{name}.{key}", f"profiles.{name}.{spelled}", value, where)
                entries += [(key, piece, place) for piece, place in _pieces(spec, value, f, "profiles", name, spelled)]

    def _profile_section(self, f: ConfigFile, name: str, section: str, body: Any) -> list[tuple[str, Any, str]]:
        """The entries of a section's table under a profile (``[profiles.NAME.limits]``), each checked as the
        section's own key is."""
        entries = []
        for key, value in _table(f, body, "profiles", name, section).items():
            spec = self.schema.lookup(section, key)
            if spec is None:
                known = (f"profiles.{name}.{k}" for k in self.schema.keys_of(section))
                self._unknown(f, ("profiles", name, section, key), known)
                continue
            where = f.where("profiles", name, section, key)
            value = _validate(spec, value, where, f"profiles.{name}.{section}.{key}")
            entries.append((spec.key, value, where))
        return entries

    def add_switches(self, f: ConfigFile) -> None:
        """Apply the ``[plugins]`` switches of one file (all that is needed before the plugins load)."""
        body = f.data.get("plugins")
        if body is None:
            return
        body = _table(f, body, "plugins")
        for spec in PLUGIN_LISTS.values():
            if spec.name in body:
                where = f.where("plugins", spec.name)
                self.switch_plugins(spec, _validate(spec, body[spec.name], where), where)

    def _add_plugins(self, f: ConfigFile, body: Any) -> None:
        self.add_switches(f)
        for plugin, table in body.items():
            if f"plugins.{plugin}" not in PLUGIN_LISTS:
                settings = _table(f, table, "plugins", plugin, what="a table of plugin settings")
                for key, value in settings.items():
                    self.set_plugin_setting(plugin, key, value, f.where("plugins", plugin, key))

    def use_profile(self, name: str, selected_by: str | None) -> None:
        """Apply the profile ``name`` merged from every file."""
        if name not in self.profiles:
            available = ", ".join(sorted(self.profiles)) or "none defined"
            raise ConfigError(f"unknown profile {name!r} (available profiles: {available})", source=selected_by)
        for key, value, where in self.profiles[name]:
            self.set(PROFILE_TARGETS.get(key) or self.schema.settings[key], value, f"profile {name} ({where})")

    def add_environ(self, environ: Mapping[str, str], *, switches_only: bool = False) -> None:
        """Apply ``CCI_*`` variables (only ``CCI_PLUGINS_*`` with ``switches_only``) and warn about unknown ones."""
        env_vars, aliases = self.schema.env_vars, self.schema.env_aliases
        spellings = _Spellings()
        for var in sorted(environ):
            if not var.startswith("CCI_"):
                continue
            spec, alias = (env_vars[var], None) if var in env_vars else aliases.get(var, (None, None))
            if spec is None:
                if not switches_only and var not in RESERVED_ENV and not var.startswith("CCI_TEST_"):
                    off = [name for name, disabled in self.disabled.items()
                           if disabled and var.startswith(f"CCI_{name.upper()}_")]
                    hint = (f" (plugin {off[0]!r} is disabled)" if off
                            else _did_you_mean(var, [*env_vars, *aliases, *RESERVED_ENV]))
                    self.warn(f"environment variable {var} is not a cci setting and is ignored{hint}")
                continue
            is_switch = spec.key in PLUGIN_LISTS
            if switches_only and not is_switch:
                continue
            source = f"env {var}"
            value = _validate(spec, environ[var], source, f"{spec.section}.{alias}" if alias else None, text=True)
            if is_switch:
                self.switch_plugins(spec, value, source)
            else:
                spellings.check(spec.env_var or var, var, value, source, key=False)
                self.set(spec, value, source)

    def add_override(self, override: Override, *, switches_only: bool = False) -> None:
        """Apply one command-line override (only a ``plugins.disabled``/``enabled`` one with ``switches_only``)."""
        key, value, source = override.key, override.value, override.source
        if switches_only and key not in PLUGIN_LISTS:
            return
        section, _, name = key.partition(".")
        spec = PLUGIN_LISTS.get(key) or self.schema.lookup(section, name)
        parent, _, leaf = key.rpartition(".")
        settings = self.schema.settings
        if spec is None and parent in settings and settings[parent].is_table:
            spec, value = settings[parent], {leaf: value}
        elif spec is None and key.startswith("plugins.") and key.count(".") == 2:
            self.set_plugin_setting(parent.partition(".")[2], leaf, value, source)
            return
        elif spec is None:
            known = [*settings, *PLUGIN_LISTS]
            raise ConfigError(f"unknown config key{_did_you_mean(key, known)}", source=source, key=key)
        items: list[str] = []  # where each item of an extended list came from
        if override.extend:
            before = self.values[spec.key]
            items = [self.sources.get(spec.key, "default")] * len(before) + [source] * len(value)
            value = [*before, *value]
        value = _validate(spec, value, source, key, text=isinstance(value, str))
        if spec.key in PLUGIN_LISTS:
            self.switch_plugins(spec, value, source)
        else:
            self.set(spec, value, source)
        self.sources.update({f"{spec.key}[{index}]": where for index, where in enumerate(items)})

    # -- result -----------------------------------------------------------------------------------------

    def disabled_plugins(self) -> frozenset[str]:
        return frozenset(name for name, disabled in self.disabled.items() if disabled)

    def warn_deprecated(self) -> None:
        for spec in self.schema.settings.values():
            if spec.deprecated and self.values[spec.key] != spec.default:
                self.warn(f"{self.sources[spec.key]}: {spec.key} is deprecated and not used ({spec.deprecated})")

    def build(self, workspace: Path, profile: str | None, files: Sequence[ConfigFile]) -> Config:
        sections = {
            section: cls(**{spec.name: self.values[spec.key]
                            for spec in self.schema.settings.values() if spec.section == section})
            for section, cls in self.schema.sections.items()
        }
        core = {name: sections.pop(name) for name in SECTIONS}
        plugins = PluginsConfig(
            disabled=self.disabled_plugins(),
            settings=MappingProxyType({name: MappingProxyType(s) for name, s in self.plugin_settings.items()}),
        )
        return Config(
            **core,
            profiles=MappingProxyType({name: _profile_config(entries) for name, entries in self.profiles.items()}),
            plugins=plugins,
            profile=profile,
            workspace=workspace,
            files=tuple(f.path for f in files),
            sources=MappingProxyType(dict(self.sources)),
            workspace_digest=_workspace_digest(workspace, files),
            sections=MappingProxyType(sections),
            schema=self.schema,
        )


def _workspace_digest(workspace: Path, files: Sequence[ConfigFile]) -> str:
    return next((f.digest() for f in files if f.path == workspace / WORKSPACE_FILE and f.data), "")


def _profile_config(entries: Iterable[tuple[str, Any, str]]) -> ProfileConfig:
    """Merge a profile's entries from all files (higher wins; tables merge per key)."""
    values: dict[str, Any] = {}
    for key, value, _ in entries:
        if key not in PROFILE_TARGETS:
            continue  # a section's key (``limits.cpu``): applied by use_profile, not a profile key
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return ProfileConfig(**values)


def _resolve_workspace(workspace: Path) -> Path:
    path = Path(workspace).expanduser()
    if not path.is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise ConfigError(f"workspace {display_path(path)} {problem}")
    return path.resolve()


class ConfigLayers(NamedTuple):
    """Every config layer of one invocation, read (the files parsed once) but not merged yet."""

    workspace: Path
    """The resolved workspace directory."""
    files: tuple[ConfigFile, ...]
    """The files that exist, lowest precedence first."""
    profile: str | None
    profile_selected_by: str | None
    environ: Mapping[str, str]
    overrides: tuple[Override, ...]

    @property
    def workspace_digest(self) -> str:
        """SHA-256 of the workspace's ``.cci.toml`` when it sets anything, else "" (see :mod:`.trust`)."""
        return _workspace_digest(self.workspace, self.files)

    def disabled_plugins(self, *, workspace: bool = True, warn: Warn | None = None) -> frozenset[str]:
        """The plugins the ``[plugins]`` switches of every layer disable (the last mention of a plugin wins).

        ``workspace=False`` leaves out the workspace's ``.cci.toml`` (one not trusted yet).
        """
        merger = _Merger(CORE_SCHEMA, warn or _warn_stderr)
        for f in self.files:
            if workspace or f.path != self.workspace / WORKSPACE_FILE:
                merger.add_switches(f)
        merger.add_environ(self.environ, switches_only=True)
        for override in self.overrides:
            merger.add_override(override, switches_only=True)
        return merger.disabled_plugins()

    def merge(self, plugin_sections: Mapping[str, tuple[type, str]] = MappingProxyType({}), *,
              warn: Warn | None = None) -> Config:
        """Merge the layers against the core's sections and ``plugin_sections`` (name -> (class, plugin)).

        ``warn`` receives non-fatal problems (default: printed on stderr); anything
        malformed is a :class:`ConfigError`.
        """
        merger = _Merger(Schema(plugin_sections) if plugin_sections else CORE_SCHEMA, warn or _warn_stderr)
        for f in self.files:
            merger.add_file(f)
        if self.profile:
            merger.use_profile(self.profile, self.profile_selected_by)
        merger.add_environ(self.environ)
        for override in self.overrides:
            merger.add_override(override)
        merger.warn_ignored_sections()
        merger.warn_deprecated()
        return merger.build(self.workspace, self.profile, self.files)


def read_layers(
    workspace: Path,
    *,
    profile: str | None = None,
    overrides: Sequence[Override] = (),
    environ: Mapping[str, str] | None = None,
    system_file: Path | None = None,
    user_file: Path | None = None,
) -> ConfigLayers:
    """Read every config file for ``workspace`` (:class:`ConfigError` if one is unreadable or malformed).

    ``profile`` (else ``CCI_PROFILE``) selects a ``[profiles.NAME]``;
    ``environ`` defaults to ``os.environ``, ``system_file`` to
    :data:`SYSTEM_FILE`, ``user_file`` to :func:`user_config_file`.
    """
    environ = os.environ if environ is None else environ
    root = _resolve_workspace(workspace)
    paths = (
        SYSTEM_FILE if system_file is None else system_file,
        user_config_file() if user_file is None else user_file,
        root / WORKSPACE_FILE,
    )
    files = tuple(f for f in map(read_config_file, paths) if f is not None)
    name = profile or environ.get("CCI_PROFILE") or None
    return ConfigLayers(root, files, name, None if profile else "env CCI_PROFILE", environ, tuple(overrides))


def load_config(
    workspace: Path,
    *,
    profile: str | None = None,
    overrides: Sequence[Override] = (),
    environ: Mapping[str, str] | None = None,
    system_file: Path | None = None,
    user_file: Path | None = None,
    warn: Warn | None = None,
    plugins: Any = None,
) -> Config:
    """Read and merge every config layer for ``workspace``, with the sections of the enabled plugins.

    The arguments are those of :func:`read_layers`; ``warn`` receives non-fatal
    problems (default: printed on stderr); ``plugins`` are the loaded plugins whose
    sections count (a :class:`~cci_core.plugin_manager.Plugins`; default: load those the layers enable). Raises
    :class:`ConfigError` for anything malformed.
    """
    layers = read_layers(workspace, profile=profile, overrides=overrides, environ=environ,
                         system_file=system_file, user_file=user_file)
    if plugins is None:
        from cci_core.plugin_manager import load_plugins

        plugins = load_plugins(layers.disabled_plugins(warn=warn), warn=warn or _warn_stderr)
    return layers.merge(plugins.registries.config_sections(), warn=warn)
