"""The plugin API: everything a plugin may import from cci, in one module.

A plugin, built-in or third-party, imports from here only (``from cci_core.api import
Driver, hookimpl``); every other module of ``cci_core`` is internal and may change
between releases. ``from cci_core import hookimpl`` keeps working as well.

Plugins are imported at every ``cci`` start, so this module imports nothing itself: a
name is imported from the module defining it on first access (:pep:`562`), and
importing ``Driver`` costs what importing :mod:`cci_core.driver` costs.

What it holds:

- the hook marker :data:`hookimpl` and registration (:class:`Register`, :class:`Lazy`);
- the interfaces a plugin implements or uses: the container backend (:class:`Driver`,
  :class:`Container` and their records), tool adapters (:class:`ToolAdapter`...), network
  policies (:class:`NetworkPolicy`, :class:`NetworkPlan`, :class:`Rule`...) and image
  builders (:class:`ImageBuilder`, :class:`BuildRequest`);
- published ports: the configured ones (:func:`configured_ports`, those of this command line
  :func:`command_line_ports`), how they are written and told about (:func:`port_host_address`, :func:`port_url`,
  :func:`port_exposure`, :func:`port_in_use`), and a taken one (:class:`PortInUse`);
- the records handed to hooks (:class:`LaunchContext`, :class:`Mount`, :class:`SessionEvent`), the
  record of a container's labels (:class:`SessionRecord`) and the saved sessions (:class:`SessionStore`);
- the errors (:class:`CciError` and its subclasses) and ``cci doctor`` results (:class:`Check`,
  :func:`check_ok`, :func:`check_warn`, :func:`check_fail`, :func:`check_skipped`, :func:`guarded`);
- the config (:class:`Config`, :class:`NetworkConfig`, :class:`LimitsConfig` and :func:`parse_size` of its sizes, :func:`system_config_file`, :func:`toml_parser`), and
  what a plugin declares its own section with (:class:`Setting` and the checks :func:`non_empty`,
  :func:`non_negative`, :func:`https_url`);
- host-file and tree-copy utilities that refuse links planted by the container or the workspace
  (:class:`SafeDirectory`, :func:`open_directory`, :func:`copy_tree`...), files written into the container
  user's home without following its links (:func:`write_home_file`, :func:`read_home_file`...), the container layout
  (:data:`WORKSPACE_PATH`, :data:`CONTAINER_HOME`...) and cci's own directory on the host (:func:`state_dir`);
- waiting with a growing pause for a state no event tells (:class:`Backoff`); one call on a thread of its own,
  its result collected later (:class:`InBackground`);
- for plugin commands: :func:`warn`, :func:`interruptible`, and the invocation's
  :func:`current_config`, :func:`current_plugins` and :func:`current_driver`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from cci_core.backoff import Backoff
    from cci_core.background import InBackground
    from cci_core.check import FAIL, OK, WARN, Check
    from cci_core.check import fail as check_fail
    from cci_core.check import ok as check_ok
    from cci_core.check import skipped as check_skipped
    from cci_core.check import warn as check_warn
    from cci_core.cli.entry import own_command, started_here
    from cci_core.cli.signals import CLEANUP_SECONDS, ignoring_interrupts, interruptible
    from cci_core.cli.state import AppState
    from cci_core.config import Config, NetworkConfig
    from cci_core.config.schema import Setting, https_url, non_empty, non_negative
    from cci_core.config.sources import _tomllib as toml_parser
    from cci_core.context import LaunchContext, Mount, SessionEvent
    from cci_core.digests import sha1, sha256
    from cci_core.doctor import guarded
    from cci_core.driver import (
        LABEL_PREFIX,
        UNREADABLE,
        Container,
        ContainerExistsError,
        ContainerInfo,
        ContainerSpec,
        Driver,
        ExecResult,
        FileStatus,
        ImageInfo,
        OutputHandler,
        RunningCommand,
        PolicyNetwork,
        PublishedPort,
        ServerInfo,
        SnapshotInfo,
        TreeEntry,
        TreeLimits,
        TreeReadError,
    )
    from cci_core.errors import (
        BackendError,
        CciError,
        ConfigError,
        NotAvailableError,
        NotFoundError,
        NotImplementedYetError,
        PluginError,
        UsageError,
    )
    from cci_core.hookspecs import hookimpl
    from cci_core.home_files import HomeFileRefused, home_path, make_home_directories, read_home_file, write_home_file
    from cci_core.host_files import (
        PlantedLinkError,
        SafeDirectory,
        chmod_handle,
        leads_inside,
        only_mine,
        open_directory,
        open_parent,
    )
    from cci_core.image_builder import BuildRequest, ImageBuilder
    from cci_core.layout import CONTAINER_HOME, CONTAINER_USER, WORKSPACE_PATH, state_dir
    from cci_core.nesting import MAX_NESTING, nested_too_deep
    from cci_core.network_policy import (
        BROADCAST_RULE,
        DEFAULT_PORTS,
        HOST_RULE,
        MULTICAST_AND_BROADCAST,
        HostRule,
        NetworkPlan,
        NetworkPolicy,
        ProxySpec,
        RequestRecord,
        Rule,
    )
    from cci_core.config.schema import LimitsConfig
    from cci_core.limits import format_size, parse_size, save_size_of
    from cci_core.plugin_manager import Plugins
    from cci_core.ports import PortInUse, command_line_ports, configured_ports
    from cci_core.ports import exposure as port_exposure
    from cci_core.ports import host_address as port_host_address
    from cci_core.ports import in_use as port_in_use
    from cci_core.ports import url as port_url
    from cci_core.private_files import read_json, replace_private_json
    from cci_core.registry import Lazy, Register, make_tool
    from cci_core.secrets import SecretSpec, Substitution
    from cci_core.session_readiness import wait_for_boot
    from cci_core.session_record import Kind, Mode, SessionRecord, State, launcher_id
    from cci_core.session_store import SavedSession, SessionStore, default_root
    from cci_core.terminal_text import printable, warn
    from cci_core.tool import CredentialFile, ImageFetch, ImageFile, ToolAdapter, tool_version_property
    from cci_core.tree_copy import LIMITS as COPY_LIMITS
    from cci_core.tree_copy import MAX_DEPTH, MAX_FILE, MAX_TOTAL, CopyPolicy, CopyReport, copy_tree, save_limits
    from cci_core.tree_copy import printable as printable_name

__all__ = [
    # hooks and registration
    "hookimpl", "Register", "Lazy",
    # the container backend
    "Driver", "Container", "ContainerSpec", "ContainerInfo", "ImageInfo", "ServerInfo", "ExecResult",
    "OutputHandler", "RunningCommand", "PolicyNetwork", "PublishedPort", "SnapshotInfo", "FileStatus", "TreeEntry", "TreeLimits", "UNREADABLE", "LABEL_PREFIX",
    # tools, network policies, image builders
    "ToolAdapter", "CredentialFile", "ImageFile", "ImageFetch", "tool_version_property", "make_tool",
    "NetworkPolicy", "NetworkPlan", "Rule", "HOST_RULE", "BROADCAST_RULE", "MULTICAST_AND_BROADCAST",
    "HostRule", "ProxySpec", "RequestRecord", "DEFAULT_PORTS", "SecretSpec", "Substitution",
    "ImageBuilder", "BuildRequest", "wait_for_boot",
    # published ports
    "configured_ports", "command_line_ports", "port_host_address", "port_url", "port_exposure", "port_in_use",
    "PortInUse",
    # what hooks are handed; a container's session record (its labels); saved sessions
    "LaunchContext", "Mount", "SessionEvent", "SessionRecord", "Kind", "State", "Mode", "launcher_id",
    "SessionStore", "SavedSession", "default_root",
    # errors
    "CciError", "UsageError", "ConfigError", "PluginError", "NotAvailableError", "BackendError", "NotFoundError",
    "NotImplementedYetError", "ContainerExistsError", "TreeReadError", "PlantedLinkError",
    # cci doctor
    "Check", "OK", "WARN", "FAIL", "check_ok", "check_warn", "check_fail", "check_skipped", "guarded",
    # config
    "Config", "NetworkConfig", "LimitsConfig", "parse_size", "format_size", "save_size_of", "save_limits", "system_config_file", "toml_parser",
    "Setting", "non_empty", "non_negative", "https_url",
    # host files and trees copied out of containers
    "SafeDirectory", "open_directory", "open_parent", "only_mine", "leads_inside", "chmod_handle",
    "read_json", "replace_private_json", "copy_tree", "CopyPolicy", "CopyReport", "COPY_LIMITS",
    "MAX_DEPTH", "MAX_FILE", "MAX_TOTAL", "MAX_NESTING", "nested_too_deep", "printable", "printable_name",
    # files cci writes into the container user's home, never following what the agent planted there
    "home_path", "make_home_directories", "read_home_file", "write_home_file", "HomeFileRefused",
    # the container's layout; cci's own directory on the host
    "WORKSPACE_PATH", "CONTAINER_HOME", "CONTAINER_USER", "state_dir",
    # waiting for a state no event tells
    "Backoff", "InBackground",
    # hashes without OpenSSL's library
    "sha256", "sha1",
    # plugin commands
    "warn", "interruptible", "ignoring_interrupts", "CLEANUP_SECONDS", "own_command", "started_here",
    "Plugins", "current_config", "current_plugins", "current_driver",
]

#: name -> where it is defined: ``module`` (same name there) or ``module:name``
_LAZY: dict[str, str] = {
    "hookimpl": "cci_core.hookspecs",
    **dict.fromkeys(("Register", "Lazy", "make_tool"), "cci_core.registry"),
    **dict.fromkeys(("Driver", "Container", "ContainerSpec", "ContainerInfo", "ImageInfo", "ServerInfo", "ExecResult",
                     "OutputHandler", "RunningCommand", "PolicyNetwork", "PublishedPort", "SnapshotInfo", "FileStatus", "TreeEntry", "TreeLimits", "UNREADABLE", "LABEL_PREFIX",
                     "ContainerExistsError", "TreeReadError"), "cci_core.driver"),
    **dict.fromkeys(("ToolAdapter", "CredentialFile", "ImageFile", "ImageFetch", "tool_version_property"),
                    "cci_core.tool"),
    **dict.fromkeys(("NetworkPolicy", "NetworkPlan", "Rule", "HOST_RULE", "BROADCAST_RULE", "MULTICAST_AND_BROADCAST",
                     "HostRule", "ProxySpec", "RequestRecord", "DEFAULT_PORTS"), "cci_core.network_policy"),
    **dict.fromkeys(("SecretSpec", "Substitution"), "cci_core.secrets"),
    **dict.fromkeys(("ImageBuilder", "BuildRequest"), "cci_core.image_builder"),
    "wait_for_boot": "cci_core.session_readiness",
    **dict.fromkeys(("configured_ports", "command_line_ports", "PortInUse"), "cci_core.ports"),
    **{f"port_{name}": f"cci_core.ports:{name}" for name in ("host_address", "url", "exposure", "in_use")},
    **dict.fromkeys(("SessionRecord", "Kind", "State", "Mode", "launcher_id"), "cci_core.session_record"),
    **dict.fromkeys(("LaunchContext", "Mount", "SessionEvent"), "cci_core.context"),
    **dict.fromkeys(("SessionStore", "SavedSession", "default_root"), "cci_core.session_store"),
    **dict.fromkeys(("CciError", "UsageError", "ConfigError", "PluginError", "NotAvailableError", "BackendError",
                     "NotFoundError", "NotImplementedYetError"), "cci_core.errors"),
    **dict.fromkeys(("Check", "OK", "WARN", "FAIL"), "cci_core.check"),
    **{f"check_{name}": f"cci_core.check:{name}" for name in ("ok", "warn", "fail", "skipped")},
    "guarded": "cci_core.doctor",
    **dict.fromkeys(("Config", "NetworkConfig"), "cci_core.config"),
    "LimitsConfig": "cci_core.config.schema",
    **dict.fromkeys(("parse_size", "format_size", "save_size_of"), "cci_core.limits"),
    "save_limits": "cci_core.tree_copy",
    "toml_parser": "cci_core.config.sources:_tomllib",
    **dict.fromkeys(("Setting", "non_empty", "non_negative", "https_url"), "cci_core.config.schema"),
    **dict.fromkeys(("SafeDirectory", "open_directory", "open_parent", "only_mine", "leads_inside", "chmod_handle",
                     "PlantedLinkError"), "cci_core.host_files"),
    **dict.fromkeys(("read_json", "replace_private_json"), "cci_core.private_files"),
    **dict.fromkeys(("home_path", "make_home_directories", "read_home_file", "write_home_file", "HomeFileRefused"),
                    "cci_core.home_files"),
    **dict.fromkeys(("copy_tree", "CopyPolicy", "CopyReport", "MAX_DEPTH", "MAX_FILE", "MAX_TOTAL"), "cci_core.tree_copy"),
    "COPY_LIMITS": "cci_core.tree_copy:LIMITS",
    "printable_name": "cci_core.tree_copy:printable",
    **dict.fromkeys(("MAX_NESTING", "nested_too_deep"), "cci_core.nesting"),
    **dict.fromkeys(("printable", "warn"), "cci_core.terminal_text"),
    **dict.fromkeys(("WORKSPACE_PATH", "CONTAINER_HOME", "CONTAINER_USER", "state_dir"), "cci_core.layout"),
    **dict.fromkeys(("interruptible", "ignoring_interrupts", "CLEANUP_SECONDS"), "cci_core.cli.signals"),
    **dict.fromkeys(("own_command", "started_here"), "cci_core.cli.entry"),
    "Plugins": "cci_core.plugin_manager",
    "Backoff": "cci_core.backoff",
    "InBackground": "cci_core.background",
    **dict.fromkeys(("sha256", "sha1"), "cci_core.digests"),
}


def __getattr__(name: str) -> Any:
    """Import ``name`` from the module defining it, on first access (later ones find it in this module)."""
    import importlib

    try:
        module, _, attribute = _LAZY[name].partition(":")
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def system_config_file() -> Path:
    """The system-wide config file (``/etc/cci/config.toml``)."""
    from cci_core.config import loader

    return loader.SYSTEM_FILE


def current_config() -> Config:
    """The merged config of the running ``cci`` command (loaded on first use)."""
    return _invocation("current_config").config


def current_plugins() -> Plugins:
    """The plugins the running ``cci`` command loaded (registries and hooks)."""
    return _invocation("current_plugins").plugins


def current_driver() -> Driver:
    """The container backend of the running ``cci`` command (``[defaults] driver``; it connects on first use)."""
    return _invocation("current_driver").driver


def _invocation(caller: str) -> AppState:
    """What the running ``cci`` command knows; a :class:`RuntimeError` when no cci command is running."""
    import click

    from cci_core.cli.state import AppState

    context = click.get_current_context(silent=True)
    state = context.find_root().obj if context else None
    if not isinstance(state, AppState):
        raise RuntimeError(f"cci_core.api.{caller}() works only while a cci command runs (call it from the code "
                           "of a command or a hook, not at import time or from another program)")
    return state
