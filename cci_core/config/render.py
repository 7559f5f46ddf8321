"""Show a merged :class:`Config` as annotated TOML or as JSON-ready data."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from cci_core.config.model import Config
from cci_core.config.schema import FieldSpec
from cci_core.config.sources import display_path
from cci_core.terminal_text import escape_in_string

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def _value(config: Config, spec: FieldSpec) -> Any:
    return getattr(config.section(spec.section), spec.name)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _quoted(key)


def _quoted(text: str) -> str:
    """A TOML basic string; characters that could act on a terminal are escapes (the file may be the agent's)."""
    return escape_in_string(json.dumps(text, ensure_ascii=False))


def _toml_value(value: Any) -> str:
    """Format a value as a TOML literal."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, frozenset, set)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if hasattr(value, "items"):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return _quoted(str(value))


def _line(key: str, value: Any, source: str) -> str:
    if value is None:
        return f"# {_toml_key(key)} is not set  # {source}"
    return f"{_toml_key(key)} = {_toml_value(value)}  # {source}"


def render_toml(config: Config) -> str:
    """The merged config as TOML, each value followed by a comment naming its source."""
    out = [
        "# cci configuration: merged values, each followed by where it came from",
        f"# active profile: {config.profile or '(none)'}",
        "# files read, lowest precedence first:",
        *([f"#   {display_path(path)}" for path in config.files] or ["#   (none)"]),
    ]
    if config.profiles:
        out.append(f"# profiles defined: {', '.join(sorted(config.profiles))}")
    schema = config.schema
    for section in schema.sections:
        owner = schema.owners.get(section)
        out += ["", f"[{section}]" + (f"  # plugin {owner}" if owner else "")]
        tables: list[FieldSpec] = []
        for spec in (s for s in schema.settings.values() if s.section == section):
            value = _value(config, spec)
            if spec.is_table and value:
                tables.append(spec)
            else:
                out.append(_line(spec.name, value, config.source_of(spec.key)))
        for spec in tables:
            out += ["", f"[{spec.key}]"]
            out += [_line(k, v, config.source_of(f"{spec.key}.{k}")) for k, v in _value(config, spec).items()]
    out += ["", "[plugins]", _line("disabled", sorted(config.plugins.disabled), config.source_of("plugins.disabled"))]
    for plugin, settings in config.plugins.settings.items():
        out += ["", f"[plugins.{_toml_key(plugin)}]"]
        out += [_line(k, v, config.source_of(f"plugins.{plugin}.{k}")) for k, v in settings.items()]
    return "\n".join(out) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def to_json(config: Config) -> dict[str, Any]:
    """The merged config as JSON-ready data: files, profile, values with sources, plugins' sections, plugins."""
    return {
        "files": [str(path) for path in config.files],
        "profile": config.profile,
        "values": {
            key: {"value": _jsonable(_value(config, spec)), "source": config.source_of(key)}
            for key, spec in config.schema.settings.items()
        },
        "sections": {section: {"plugin": owner} for section, owner in config.schema.owners.items()},
        "plugins": {
            "disabled": sorted(config.plugins.disabled),
            "settings": _jsonable(config.plugins.settings),
        },
    }
