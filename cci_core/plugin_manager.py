"""Build the plugin manager for one cci invocation.

Built-in plugins come from the explicit :data:`BUILTIN_PLUGINS` list;
third-party plugins from the entry-point group ``cci``. Disabled plugins are
blocked before they are imported. There is no module-level manager: every
invocation (and every test) calls :func:`load_plugins`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Collection, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import pluggy

from cci_core import __version__, hookspecs
from cci_core.entry_points import find_entry_points
from cci_core.errors import PluginError
from cci_core.registry import Register, Registries

ENTRY_POINT_GROUP = "cci"
DISTRIBUTION = "claude-code-isolated"
TRACE_ENV = "CCI_TRACE_HOOKS"

#: (plugin name, module) of every built-in plugin, registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("incus", "cci_builtin_plugins.incus.plugin"),
    ("tool-state", "cci_builtin_plugins.tools.state"),
    ("claude", "cci_builtin_plugins.tools.claude"),
    ("codex", "cci_builtin_plugins.tools.codex"),
    ("network-restricted", "cci_builtin_plugins.network.restricted"),
    ("network-allowlist", "cci_builtin_plugins.network.allowlist"),
    ("network-open", "cci_builtin_plugins.network.open"),
    ("network-proxy", "cci_builtin_plugins.network.proxy"),
    ("images", "cci_builtin_plugins.images.plugin"),
    ("setup", "cci_builtin_plugins.setup.plugin"),
    ("workspace-guard", "cci_builtin_plugins.workspace.plugin"),
    ("ports", "cci_builtin_plugins.ports.plugin"),
)

#: names that cannot be plugin names because ``[plugins]`` uses them as keys
RESERVED_NAMES = frozenset({"enabled", "disabled"})


class PluginInfo(NamedTuple):
    """One plugin as ``cci plugins list`` shows it."""

    name: str
    distribution: str
    version: str
    builtin: bool
    enabled: bool
    module: str
    hooks: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """What the plugin provides (``driver``, ``tool``, ``command``...), or ``settings``, ``hooks`` / ``-``.

        A config section a plugin declares next to what it provides does not change its kind.
        """
        kinds = dict.fromkeys(item.split(":", 1)[0] for item in self.provides)
        things = [kind for kind in kinds if kind != "settings"]
        if things or kinds:
            return ",".join(things or kinds)
        return "hooks" if self.enabled else "-"


class Plugins:
    """The plugins loaded for one invocation and what they registered."""

    def __init__(self, manager: pluggy.PluginManager, registries: Registries, infos: tuple[PluginInfo, ...]) -> None:
        self.manager = manager
        self.registries = registries
        self.infos = infos

    @property
    def hook(self) -> Any:
        """The hook relay: ``plugins.hook.cci_mounts(ctx=ctx)``."""
        return self.manager.hook


class _Candidate(NamedTuple):
    name: str
    distribution: str
    version: str
    builtin: bool
    module: str
    load: Callable[[], object]


def load_plugins(
    disabled: Collection[str] = (),
    *,
    entry_points: bool = True,
    extra: Sequence[tuple[str, object]] = (),
    warn: Callable[[str], None] | None = None,
) -> Plugins:
    """Import and register the enabled plugins, then let each register what it provides.

    :param disabled: plugin names to block; they are never imported.
    :param entry_points: also load third-party plugins from the ``cci`` entry-point group.
    :param extra: additional ``(name, plugin object)`` pairs, registered after the others.
    :param warn: called with a message for each disabled name that matches no plugin.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV):
        manager.trace.root.setwriter(sys.stderr.write)
        manager.enable_tracing()

    candidates = list(_builtin_candidates())
    if entry_points:
        candidates.extend(_entry_point_candidates())
    candidates.extend(
        _Candidate(name, "(registered in-process)", "", False, _module_name(obj), lambda obj=obj: obj)
        for name, obj in extra
    )

    disabled = set(disabled)
    for name in disabled:
        manager.set_blocked(name)
    known = {candidate.name for candidate in candidates}
    for name in sorted(disabled - known):
        if warn:
            warn(f"plugin {name!r} is disabled in the config but is not installed")

    infos: list[PluginInfo] = []
    for candidate in candidates:
        enabled = candidate.name not in disabled
        if enabled:
            _register(manager, candidate)
        infos.append(
            PluginInfo(candidate.name, candidate.distribution, candidate.version, candidate.builtin, enabled,
                       candidate.module)
        )
    _check_pending(manager)

    registries = Registries()
    _call_register(manager, registries)
    infos = [_describe(manager, registries, info) for info in infos]
    return Plugins(manager, registries, tuple(infos))


def _builtin_candidates() -> list[_Candidate]:
    version = __version__
    return [
        _Candidate(name, DISTRIBUTION, version, True, module, lambda module=module: importlib.import_module(module))
        for name, module in BUILTIN_PLUGINS
    ]


def _entry_point_candidates() -> list[_Candidate]:
    found = []
    for ep in find_entry_points(ENTRY_POINT_GROUP):
        distribution, version = ep.distribution()
        found.append(_Candidate(ep.name, distribution, version, False, ep.value, ep.load))
    return found


def _register(manager: pluggy.PluginManager, candidate: _Candidate) -> None:
    where = f"plugin {candidate.name!r} (distribution {candidate.distribution}"
    where += f" {candidate.version})" if candidate.version else ")"
    if candidate.name in RESERVED_NAMES:
        raise PluginError(f"{where} uses a reserved name", hint="rename its entry point")
    if manager.has_plugin(candidate.name):
        raise PluginError(f"{where}: another plugin is already registered under this name")
    try:
        plugin = candidate.load()
    except Exception as exc:  # a broken third-party plugin must not crash cci with a traceback
        raise PluginError(
            f"{where} failed to import: {type(exc).__name__}: {exc}",
            hint=f"fix or uninstall it, or disable it with CCI_PLUGINS_DISABLED={candidate.name}",
        ) from exc
    try:
        manager.register(_hook_surface(plugin), name=candidate.name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{where} is invalid: {exc}") from exc


def _hook_surface(plugin: object) -> object:
    """A module plugin's hook implementations alone, for pluggy to scan.

    pluggy inspects every attribute of what it registers (~10 us each, statically);
    a module's attributes are mostly its imports. Only ``@hookimpl`` functions count.
    """
    if not isinstance(plugin, ModuleType):
        return plugin
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    surface = ModuleType(plugin.__name__, plugin.__doc__)
    surface.__dict__.update((name, value) for name, value in vars(plugin).items() if hasattr(value, marker))
    return surface


def _check_pending(manager: pluggy.PluginManager) -> None:
    """Reject hook implementations whose names match no hookspec (usually a typo)."""
    known = [name for name in dir(hookspecs) if name.startswith("cci_")]
    for name, plugin in manager.list_name_plugin():
        for caller in manager.get_hookcallers(plugin) or []:
            if caller.spec is None and not all(
                impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin
            ):
                import difflib

                close = difflib.get_close_matches(caller.name, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known hooks: {', '.join(known)}"
                raise PluginError(f"plugin {name!r} implements unknown hook {caller.name!r}", hint=hint)
    manager.check_pending()


def _call_register(manager: pluggy.PluginManager, registries: Registries) -> None:
    """Call ``cci_register`` once per plugin with a :class:`Register` bound to it."""
    plugins = manager.list_name_plugin()
    for name, plugin in plugins:
        if not any(caller.name == "cci_register" for caller in manager.get_hookcallers(plugin) or []):
            continue
        others = [other for _, other in plugins if other is not plugin]
        caller = manager.subset_hook_caller("cci_register", remove_plugins=others)
        try:
            caller(register=Register(registries, name))
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {name!r} failed to register: {type(exc).__name__}: {exc}") from exc


def _describe(manager: pluggy.PluginManager, registries: Registries, info: PluginInfo) -> PluginInfo:
    plugin = manager.get_plugin(info.name) if info.enabled else None
    if plugin is None:
        return info
    hooks = tuple(sorted(caller.name for caller in manager.get_hookcallers(plugin) or []))
    return info._replace(hooks=hooks, provides=tuple(registries.provided_by(info.name)))


def _module_name(obj: object) -> str:
    if isinstance(obj, ModuleType):
        return obj.__name__
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


