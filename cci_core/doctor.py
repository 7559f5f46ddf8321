"""``cci doctor``: checks that this machine can run cci, and how their results are shown.

A check is a :class:`Check` (from :mod:`cci_core.check`, re-exported here): a name, a status
(``ok``, ``warn`` or ``fail``), what was found, and for a problem the fix. The core checks here are not
backend-specific (the config loads, a workspace config is trusted, the plugins load, the configured driver,
tool and network policy exist); each plugin adds its own through the hook
``cci_doctor_checks(config)``: the Incus plugin checks the daemon, storage,
network, id mapping and image.

Nothing here raises: a check that cannot be made is itself a ``fail``, so one
broken thing never hides the others. Checks that need something which failed
(plugins need the config; the configured driver needs the plugins) are left
out and replaced by one ``warn`` line named ``skipped`` saying which and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cci_core.check import FAIL, OK, STATUSES, WARN, Check, fail, ok, skipped, warn
from cci_core.errors import CciError

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.plugin_manager import Plugins
    from cci_core.registry import Registry

#: exit codes of ``cci doctor``: nothing failed (warnings allowed), or at least one check failed
EXIT_OK = 0
EXIT_FAILED = 1

HOOK = "cci_doctor_checks"


def from_error(name: str, error: BaseException, fix: str = "") -> Check:
    """A ``fail`` for an exception: a :class:`CciError` gives its message and hint, anything else its type."""
    if isinstance(error, CciError):
        return fail(name, error.message, error.hint or fix)
    return fail(name, f"{type(error).__name__}: {error}", fix or "this is a bug in cci or a plugin: please report it")


def guarded(name: str, check: Callable[..., Check], *args: Any, **kwargs: Any) -> Check:
    """Run one check; whatever it raises becomes a ``fail`` named ``name``. Never raises (but lets Ctrl+C through)."""
    try:
        return check(*args, **kwargs)
    except Exception as exc:
        return from_error(name, exc)


def failed(checks: Iterable[Check]) -> bool:
    """Whether any check failed."""
    return any(check.status == FAIL for check in checks)


def exit_code(checks: Iterable[Check]) -> int:
    """:data:`EXIT_FAILED` when a check failed, else :data:`EXIT_OK` (warnings do not fail)."""
    return EXIT_FAILED if failed(checks) else EXIT_OK


# --- the core checks ------------------------------------------------------------------------------------------


def config_check(config: Config) -> Check:
    """The config loaded: which files it was read from."""
    if not config.files:
        return ok("config", "no config files: built-in defaults and CCI_* variables")
    files = ", ".join(str(path) for path in config.files)
    profile = f", profile {config.profile!r}" if config.profile else ""
    return ok("config", f"read {files}{profile}")


def trust_check(config: Config) -> Check:
    """The workspace's ``.cci.toml`` is trusted as it is now (only asked when it sets something)."""
    from cci_core.config.trust import require_trusted, workspace_file

    require_trusted(config)
    return ok("workspace trust", f"{workspace_file(config)} is trusted as it is")


def plugins_check(plugins: Plugins) -> Check:
    """The plugins loaded: which are enabled."""
    enabled = [info.name for info in plugins.infos if info.enabled]
    disabled = [info.name for info in plugins.infos if not info.enabled]
    detail = f"{len(enabled)} enabled ({', '.join(enabled)})"
    if disabled:
        detail += f"; disabled: {', '.join(disabled)}"
    return ok("plugins", detail)


def registered_check(name: str, registry: Registry[Any], wanted: str, setting: str) -> Check:
    """The configured ``wanted`` (``setting``'s value) is registered by an enabled plugin."""
    try:
        registry.get(wanted)
    except CciError as exc:
        available = ", ".join(registry.names()) or "none"
        return fail(name, exc.message, f"install or enable the plugin that provides {wanted!r}, or set {setting} "
                                       f"to one of: {available}")
    plugin = next(entry.plugin for entry in registry.entries() if entry.name == wanted)
    return ok(name, f"{wanted} (plugin {plugin})")


def network_policy_check(config: Config, plugins: Plugins) -> Check:
    """The network mode is registered and accepts the ``[network]`` settings."""
    registry = plugins.registries.network_policies
    found = registered_check("network policy", registry, config.network.mode, "[network] mode")
    if found.status != OK:
        return found
    from cci_core.networking import make_policy

    try:
        make_policy(registry.get(config.network.mode), config).validate(config.network)
    except CciError as exc:
        return fail("network policy", f"{config.network.mode}: {exc.message}",
                    exc.hint or "fix the [network] settings, see 'cci config show'")
    return found


def registry_checks(config: Config, plugins: Plugins) -> list[Check]:
    """The configured driver, tool and network policy are available."""
    registries = plugins.registries
    return [
        guarded("driver", registered_check, "driver", registries.drivers, config.defaults.driver,
                "[defaults] driver"),
        guarded("tool", registered_check, "tool", registries.tools, config.tool.name, "[tool] name"),
        guarded("network policy", network_policy_check, config, plugins),
    ]


def plugin_checks(config: Config, plugins: Plugins) -> list[Check]:
    """What every enabled plugin's ``cci_doctor_checks`` returns, in plugin order.

    Each plugin is called on its own, so a plugin that raises or returns
    something that is not a list of :class:`Check` costs one ``fail`` line
    naming it, and the other plugins' checks still run.
    """
    manager = plugins.manager
    named = manager.list_name_plugin()
    checks: list[Check] = []
    for name, plugin in named:
        if not any(caller.name == HOOK for caller in manager.get_hookcallers(plugin) or []):
            continue
        others = [other for _, other in named if other is not plugin]
        caller = manager.subset_hook_caller(HOOK, remove_plugins=others)
        try:
            results = caller(config=config)
        except Exception as exc:
            checks.append(from_error(f"plugin {name}", exc, f"this is a bug in plugin {name!r}: please report it"))
            continue
        for result in results:
            checks.extend(_valid(name, result))
    return checks


def _valid(plugin: str, result: Any) -> list[Check]:
    if result is None:
        return []
    items = list(result) if isinstance(result, (list, tuple)) and not isinstance(result, Check) else None
    if items is None or not all(isinstance(item, Check) and item.status in STATUSES for item in items):
        return [fail(f"plugin {plugin}", f"its cci_doctor_checks returned {result!r}, not a list of Check",
                     f"this is a bug in plugin {plugin!r}: please report it")]
    return items


def run_checks(load_config: Callable[[], Config], load_plugins: Callable[[Config], Plugins]) -> list[Check]:
    """Every check, in order: config, workspace trust, plugins, registries, then each plugin's own. Never raises."""
    try:
        config = load_config()
    except CciError as exc:
        return [from_error("config", exc, "fix the setting named above; 'cci config path' lists the files"),
                skipped(["plugins", "driver", "tool", "network policy", "backend"], "the config did not load",
                        "correct the config first, then run 'cci doctor' again")]
    checks = [guarded("config", config_check, config)]
    if config.workspace_digest:
        checks.append(guarded("workspace trust", trust_check, config))
        if checks[-1].status == FAIL:
            return [*checks, skipped(["plugins", "driver", "tool", "network policy", "backend"],
                                     "cci does not act on an untrusted workspace config",
                                     "resolve 'workspace trust' first, then run 'cci doctor' again")]
    try:
        plugins = load_plugins(config)
    except CciError as exc:
        return [*checks, from_error("plugins", exc),
                skipped(["driver", "tool", "network policy", "backend"], "the plugins did not load",
                        "resolve 'plugins' first, then run 'cci doctor' again")]
    checks.append(guarded("plugins", plugins_check, plugins))
    checks.extend(registry_checks(config, plugins))
    checks.extend(plugin_checks(config, plugins))
    return checks


# --- output ----------------------------------------------------------------------------------------------------


def render_text(checks: Sequence[Check]) -> str:
    """One line per check: status, name, what was found and, for a problem, ``fix: ...``."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        line = f"{check.status:<4}  {check.name:<{width}}  {check.detail}"
        if check.fix and check.status != OK:
            line += f"  fix: {check.fix}"
        lines.append(line)
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    """A JSON list of ``{"name", "status", "detail", "fix"}`` objects, in order."""
    return json.dumps([check._asdict() for check in checks], indent=2)


def summary(checks: Sequence[Check]) -> str | None:
    """``N check(s) failed`` when some did, else None."""
    count = sum(check.status == FAIL for check in checks)
    if not count:
        return None
    names = ", ".join(check.name for check in checks if check.status == FAIL)
    return f"{count} check{'s' if count > 1 else ''} failed: {names}"
