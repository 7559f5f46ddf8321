"""Merge the config layers into a :class:`Config`, remembering where each value came from.

Layers, lowest precedence first: built-in defaults, the system file, the user
file, the workspace ``.cci.toml``, the selected ``[profiles.NAME]``, ``CCI_*``
environment variables and command-line overrides.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

from cci_core.config.coerce import Invalid, check_value, describe_value, parse_text
from cci_core.config.model import Config, Override
from cci_core.config.schema import (
    ENV_VARS,
    PLUGIN_LISTS,
    PROFILE_TARGETS,
    RESERVED_ENV,
    SECTIONS,
    SETTINGS,
    FieldSpec,
    PluginsConfig,
    ProfileConfig,
)
from cci_core.config.sources import ConfigFile, display_path, read_config_file
from cci_core.errors import ConfigError

Warn = Callable[[str], None]

SYSTEM_FILE = Path("/etc/cci/config.toml")
WORKSPACE_FILE = ".cci.toml"
_TOP_LEVEL = (*SECTIONS, "profiles", "plugins")


def user_config_file() -> Path:
    """The per-user config file, e.g. ``~/.config/cci/config.toml`` (honours ``XDG_CONFIG_HOME``)."""
    import platformdirs

    return platformdirs.user_config_path("cci") / "config.toml"


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


def _pieces(spec: FieldSpec, value: Any, f: ConfigFile, *key: str) -> list[tuple[Any, str]]:
    """Split a checked value into ``(value, where)`` pieces: one per item for tables, so each keeps its line."""
    if spec.is_table:
        return [({name: item}, f.where(*key, name)) for name, item in value.items()]
    return [(value, f.where(*key))]


def _table(f: ConfigFile, value: Any, *key: str, what: str = "a table") -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected {what}, got {describe_value(value)}", source=f.where(*key), key=".".join(key))
    return value


class _Merger:
    """Accumulates layers in precedence order."""

    def __init__(self, warn: Warn) -> None:
        self.warn = warn
        self.values: dict[str, Any] = {key: _fresh(spec.default) for key, spec in SETTINGS.items()}
        self.sources: dict[str, str] = {}
        self.profiles: dict[str, list[tuple[str, Any, str]]] = {}  # name -> (key, value, where), lowest first
        self.disabled: dict[str, bool] = {}
        self.plugin_settings: dict[str, dict[str, Any]] = {}

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

    # -- layers -----------------------------------------------------------------------------------------

    def add_file(self, f: ConfigFile) -> None:
        """Apply one config file; its profiles are only collected."""
        for name, body in f.data.items():
            if name in SECTIONS:
                self._add_section(f, name, body)
            elif name == "profiles":
                self._add_profiles(f, body)
            elif name == "plugins":
                self._add_plugins(f, body)
            else:
                self._unknown(f, (name,), _TOP_LEVEL, "section" if isinstance(body, dict) else "key")

    def _add_section(self, f: ConfigFile, section: str, body: Any) -> None:
        for name, value in _table(f, body, section).items():
            spec = SETTINGS.get(f"{section}.{name}")
            if spec is None:
                self._unknown(f, (section, name), (key for key in SETTINGS if key.startswith(f"{section}.")))
            else:
                for piece, where in _pieces(spec, _validate(spec, value, f.where(section, name)), f, section, name):
                    self.set(spec, piece, where)

    def _add_profiles(self, f: ConfigFile, body: Any) -> None:
        for name, table in _table(f, body, "profiles").items():
            entries = self.profiles.setdefault(name, [])
            for key, value in _table(f, table, "profiles", name).items():
                spec = PROFILE_TARGETS.get(key)
                if spec is None:
                    self._unknown(f, ("profiles", name, key), (f"profiles.{name}.{k}" for k in PROFILE_TARGETS))
                    continue
                value = _validate(spec, value, f.where("profiles", name, key), f"profiles.{name}.{key}")
                entries += [(key, piece, where) for piece, where in _pieces(spec, value, f, "profiles", name, key)]

    def _add_plugins(self, f: ConfigFile, body: Any) -> None:
        body = _table(f, body, "plugins")
        for spec in PLUGIN_LISTS.values():
            if spec.name in body:
                where = f.where("plugins", spec.name)
                self.switch_plugins(spec, _validate(spec, body[spec.name], where), where)
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
            self.set(PROFILE_TARGETS[key], value, f"profile {name} ({where})")

    def add_environ(self, environ: Mapping[str, str]) -> None:
        """Apply ``CCI_*`` variables and warn about unknown ones."""
        for var, spec in ENV_VARS.items():
            if var in environ:
                source = f"env {var}"
                value = _validate(spec, environ[var], source, text=True)
                if spec.key in PLUGIN_LISTS:
                    self.switch_plugins(spec, value, source)
                else:
                    self.set(spec, value, source)
        for var in sorted(environ):
            if var.startswith("CCI_") and var not in ENV_VARS and var not in RESERVED_ENV and not var.startswith(
                "CCI_TEST_"
            ):
                hint = _did_you_mean(var, [*ENV_VARS, *RESERVED_ENV])
                self.warn(f"environment variable {var} is not a cci setting and is ignored{hint}")

    def add_override(self, override: Override) -> None:
        """Apply one command-line override."""
        key, value, source = override.key, override.value, override.source
        spec = SETTINGS.get(key) or PLUGIN_LISTS.get(key)
        parent, _, leaf = key.rpartition(".")
        if spec is None and parent in SETTINGS and SETTINGS[parent].is_table:
            spec, value = SETTINGS[parent], {leaf: value}
        elif spec is None and key.startswith("plugins.") and key.count(".") == 2:
            self.set_plugin_setting(parent.partition(".")[2], leaf, value, source)
            return
        elif spec is None:
            known = [*SETTINGS, *PLUGIN_LISTS]
            raise ConfigError(f"unknown config key{_did_you_mean(key, known)}", source=source, key=key)
        value = _validate(spec, value, source, key, text=isinstance(value, str))
        if spec.key in PLUGIN_LISTS:
            self.switch_plugins(spec, value, source)
        else:
            self.set(spec, value, source)

    # -- result -----------------------------------------------------------------------------------------

    def warn_deprecated(self) -> None:
        for spec in SETTINGS.values():
            if spec.deprecated and self.values[spec.key] != spec.default:
                self.warn(f"{self.sources[spec.key]}: {spec.key} is deprecated and not used ({spec.deprecated})")

    def build(self, workspace: Path, profile: str | None, files: Sequence[ConfigFile]) -> Config:
        sections = {
            section: cls(**{spec.name: self.values[spec.key] for spec in SETTINGS.values() if spec.section == section})
            for section, cls in SECTIONS.items()
        }
        plugins = PluginsConfig(
            disabled=frozenset(name for name, disabled in self.disabled.items() if disabled),
            settings=MappingProxyType({name: MappingProxyType(s) for name, s in self.plugin_settings.items()}),
        )
        return Config(
            **sections,
            profiles=MappingProxyType({name: _profile_config(entries) for name, entries in self.profiles.items()}),
            plugins=plugins,
            profile=profile,
            workspace=workspace,
            files=tuple(f.path for f in files),
            sources=MappingProxyType(dict(self.sources)),
            workspace_digest=next((f.digest() for f in files if f.path == workspace / WORKSPACE_FILE and f.data), ""),
        )


def _profile_config(entries: Iterable[tuple[str, Any, str]]) -> ProfileConfig:
    """Merge a profile's entries from all files (higher wins; tables merge per key)."""
    values: dict[str, Any] = {}
    for key, value, _ in entries:
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return ProfileConfig(**values)


def _resolve_workspace(workspace: Path) -> Path:
    path = Path(workspace).expanduser()
    if not path.is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise ConfigError(f"workspace {display_path(path)} {problem}")
    return path.resolve()


def load_config(
    workspace: Path,
    *,
    profile: str | None = None,
    overrides: Sequence[Override] = (),
    environ: Mapping[str, str] | None = None,
    system_file: Path | None = None,
    user_file: Path | None = None,
    warn: Warn | None = None,
) -> Config:
    """Read and merge every config layer for ``workspace``.

    ``profile`` (else ``CCI_PROFILE``) selects a ``[profiles.NAME]``;
    ``environ`` defaults to ``os.environ``, ``system_file`` to
    :data:`SYSTEM_FILE`, ``user_file`` to :func:`user_config_file`; ``warn``
    receives non-fatal problems (default: printed on stderr). Raises
    :class:`ConfigError` for anything malformed.
    """
    environ = os.environ if environ is None else environ
    merger = _Merger(warn or _warn_stderr)
    root = _resolve_workspace(workspace)
    paths = (
        SYSTEM_FILE if system_file is None else system_file,
        user_config_file() if user_file is None else user_file,
        root / WORKSPACE_FILE,
    )
    files = [f for f in map(read_config_file, paths) if f is not None]
    for f in files:
        merger.add_file(f)
    name = profile or environ.get("CCI_PROFILE") or None
    if name:
        merger.use_profile(name, None if profile else "env CCI_PROFILE")
    merger.add_environ(environ)
    for override in overrides:
        merger.add_override(override)
    merger.warn_deprecated()
    return merger.build(root, name, files)
