"""Name-keyed registries of the exactly-one-active things plugins provide, and the config sections they declare.

A registry rejects a name registered twice (naming both plugins) and answers
an unknown name with ``... is not available (plugin may not be installed)``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from cci_core.errors import NotAvailableError, PluginError

if TYPE_CHECKING:
    import click

    from cci_core.config import Config
    from cci_core.driver import Driver
    from cci_core.image_builder import ImageBuilder
    from cci_core.network_policy import NetworkPolicy
    from cci_core.secrets import SecretSpec
    from cci_core.tool import ToolAdapter

T = TypeVar("T")

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
#: a config section's name: also part of its ``CCI_<SECTION>_<KEY>`` variables
SECTION_PATTERN = r"^[a-z][a-z0-9_]*\Z"
#: a secret's name: the environment variable carrying it
SECRET_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*\Z"


class Entry(NamedTuple):
    """One registered item and the plugin that registered it."""

    name: str
    item: Any
    plugin: str


class Lazy(NamedTuple):
    """Something registered by reference (``"module:attribute"``), imported only when first used.

    Lets a plugin register a driver, tool, policy, builder or command without
    importing its module on every ``cci`` start. ``name`` must equal the loaded
    object's name; ``summary`` stands in for a command's short help in ``cci --help``.
    """

    name: str
    reference: str
    summary: str = ""

    def load(self, plugin: str) -> Any:
        """Import the referenced object; a failure is a :class:`PluginError` naming the plugin."""
        import importlib

        module, _, attribute = self.reference.partition(":")
        try:
            item = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"plugin {plugin!r} registered {self.name!r} as {self.reference!r}, which cannot be "
                              f"loaded: {exc}") from exc
        if getattr(item, "name", None) != self.name:
            raise PluginError(f"plugin {plugin!r} registered {self.name!r}, but {self.reference} is named "
                              f"{getattr(item, 'name', None)!r}")
        return item


class Preset(NamedTuple):
    """A named list of host patterns for ``[network] presets`` (``register.add_network_preset``)."""

    name: str
    hosts: tuple[str, ...]
    summary: str = ""


class Registry(Generic[T]):
    """Items of one kind (``driver``, ``tool``...) keyed by name (matching ``pattern``)."""

    def __init__(self, kind: str, pattern: str = NAME_PATTERN, rule: str = "lowercase letters, digits, '-' and '_'"
                 ) -> None:
        self.kind = kind
        self.pattern = pattern
        self.rule = rule
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, item: T | Lazy, *, plugin: str) -> None:
        """Add ``item`` under ``name``; a malformed or duplicate name is a :class:`PluginError`."""
        if not isinstance(name, str) or not re.match(self.pattern, name):
            raise PluginError(
                f"plugin {plugin!r} registered a {self.kind} with an invalid name {name!r}",
                hint=f"names are {self.rule}",
            )
        if name in self._entries:
            first = self._entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}",
                hint="disable one of them in [plugins] disabled",
            )
        self._entries[name] = Entry(name, item, plugin)

    def get(self, name: str) -> T:
        """The item registered under ``name``, or :class:`NotAvailableError`."""
        try:
            entry = self._entries[name]
        except KeyError:
            available = ", ".join(sorted(self._entries)) or "none"
            raise NotAvailableError(
                f"{self.kind} {name!r} is not available (plugin may not be installed); available: {available}"
            ) from None
        if isinstance(entry.item, Lazy):
            entry = self._entries[name] = entry._replace(item=entry.item.load(entry.plugin))
        return entry.item  # type: ignore[no-any-return]

    def entries(self) -> list[Entry]:
        """All entries, sorted by name."""
        return [self._entries[name] for name in sorted(self._entries)]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class Registries:
    """All registries, filled by the ``cci_register`` hook."""

    def __init__(self) -> None:
        self.drivers: Registry[type[Driver]] = Registry("driver")
        self.tools: Registry[type[ToolAdapter]] = Registry("tool")
        self.network_policies: Registry[type[NetworkPolicy]] = Registry("network policy")
        self.image_builders: Registry[type[ImageBuilder]] = Registry("image builder")
        self.commands: Registry[click.Command] = Registry("command")
        self.settings: Registry[type] = Registry("config section")
        """The config sections plugins declared (``[incus]``...), NamedTuple classes by section name."""
        self.network_presets: Registry[Preset] = Registry("network preset")
        """Named host lists for ``[network] presets``."""
        self.secrets: Registry[SecretSpec] = Registry("secret", SECRET_PATTERN,
                                                      "environment variable names: letters, digits and '_'")
        """The secrets plugins know (the variable, its hosts and headers), by variable name."""

    def provided_by(self, plugin: str) -> list[str]:
        """What ``plugin`` registered, as ``kind:name`` strings (a config section as ``settings:NAME``)."""
        return [
            f"{kind}:{entry.name}"
            for kind, registry in (("driver", self.drivers), ("tool", self.tools),
                                   ("network policy", self.network_policies), ("image builder", self.image_builders),
                                   ("command", self.commands), ("settings", self.settings))
            for entry in registry.entries()
            if entry.plugin == plugin
        ]

    def secret_specs(self) -> dict[str, SecretSpec]:
        """Every secret plugins declare, by name."""
        return {entry.name: entry.item for entry in self.secrets.entries()}

    def config_sections(self) -> dict[str, tuple[type, str]]:
        """Section name -> ``(NamedTuple class, plugin)`` of every declared section, in the order declared."""
        return {name: (entry.item, entry.plugin) for name, entry in self.settings._entries.items()}


class Register:
    """The callback object a plugin receives in ``cci_register``; bound to that plugin."""

    def __init__(self, registries: Registries, plugin: str) -> None:
        self._registries = registries
        self.plugin = plugin

    def add_driver(self, driver: type[Driver] | Lazy) -> None:
        """Register a container backend class under ``driver.name``."""
        self._registries.drivers.add(_class_name(driver, self.plugin), driver, plugin=self.plugin)

    def add_tool(self, tool: type[ToolAdapter] | Lazy) -> None:
        """Register a tool adapter class under ``tool.name``."""
        self._registries.tools.add(_class_name(tool, self.plugin), tool, plugin=self.plugin)

    def add_network_policy(self, policy: type[NetworkPolicy] | Lazy) -> None:
        """Register a network policy class under ``policy.name`` (the ``--network`` mode)."""
        self._registries.network_policies.add(_class_name(policy, self.plugin), policy, plugin=self.plugin)

    def add_image_builder(self, builder: type[ImageBuilder] | Lazy) -> None:
        """Register an image builder class under ``builder.name``."""
        self._registries.image_builders.add(_class_name(builder, self.plugin), builder, plugin=self.plugin)

    def add_command(self, command: click.Command | Lazy) -> None:
        """Add a top-level ``cci`` command (a click command or group)."""
        self._registries.commands.add(command.name or "", command, plugin=self.plugin)

    def add_network_preset(self, name: str, hosts: tuple[str, ...] | list[str], summary: str = "") -> None:
        """Offer the host list ``hosts`` (patterns as in ``allowed_domains``) as ``[network] presets = [name]``."""
        if isinstance(hosts, str) or not hosts or not all(isinstance(host, str) for host in hosts):
            raise PluginError(f"plugin {self.plugin!r} registered the network preset {name!r} without a list of "
                              "host patterns", hint='e.g. ("api.example.com", "*.example.net")')
        self._registries.network_presets.add(name, Preset(name, tuple(hosts), summary), plugin=self.plugin)

    def add_secret(self, spec: SecretSpec) -> None:
        """Declare a secret passed by placeholder: its variable, the hosts it is for, the headers it travels in."""
        from cci_core.secrets import SecretSpec, spec_problem

        problem = "it is not a SecretSpec" if not isinstance(spec, SecretSpec) else spec_problem(spec)
        if problem:
            raise PluginError(f"plugin {self.plugin!r} registered the secret {getattr(spec, 'name', spec)!r}, but "
                              f"{problem}")
        self._registries.secrets.add(spec.name, spec, plugin=self.plugin)

    def add_settings(self, section: str, settings: type) -> None:
        """Declare the config section ``[section]``: a ``NamedTuple`` whose keys are ``Annotated[type, Setting(...)]``.

        Its keys are checked, take ``CCI_<SECTION>_<KEY>`` variables and are listed by
        ``cci config show`` like the core's; read it with ``config.section(section)``.
        """
        from cci_core.config.schema import RESERVED_SECTIONS, check_section_class

        if not isinstance(section, str) or not re.match(SECTION_PATTERN, section):
            raise PluginError(f"plugin {self.plugin!r} declared a config section with an invalid name {section!r}",
                              hint="section names are lowercase letters, digits and '_', starting with a letter")
        if section in RESERVED_SECTIONS:
            raise PluginError(f"plugin {self.plugin!r} declared the config section [{section}], which is cci's own "
                              "(core), not a plugin's", hint="choose another section name")
        problem = check_section_class(settings)
        if problem:
            raise PluginError(f"plugin {self.plugin!r} declared the config section [{section}] with {problem}",
                              hint="each key is Annotated[type, Setting(...)] with a default")
        self._registries.settings.add(section, settings, plugin=self.plugin)


def _class_name(cls: type | Lazy, plugin: str) -> str:
    name = getattr(cls, "name", None)
    if not isinstance(name, str):
        raise PluginError(f"plugin {plugin!r} registered {cls!r}, which has no 'name' class attribute")
    return name


def make_tool(registries: Registries, config: Config, name: str | None = None) -> ToolAdapter:
    """The tool ``name`` (default: ``[tool] name``) ready to use: ``[tool] binary`` applied to the configured tool
    only, and the config as its :attr:`~cci_core.tool.ToolAdapter.config`. An unknown name lists the available tools."""
    name = name or config.tool.name
    tool = registries.tools.get(name)(config.tool.binary if name == config.tool.name else None)
    tool.config = config
    return tool
