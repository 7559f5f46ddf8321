"""Registries: names, duplicates, lookups and attribution."""

from __future__ import annotations

from typing import Annotated, NamedTuple

import pytest

from cci_core.config.schema import Setting
from cci_core.errors import NotAvailableError, PluginError
from cci_core.registry import Lazy, Registry


def test_entries_are_sorted_and_attributed() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("b", 2, plugin="p2")
    registry.add("a", 1, plugin="p1")
    assert registry.names() == ["a", "b"]
    assert [(e.name, e.item, e.plugin) for e in registry.entries()] == [("a", 1, "p1"), ("b", 2, "p2")]
    assert registry.get("b") == 2 and "a" in registry and len(registry) == 2


@pytest.mark.parametrize("name", ["", "Upper", "has space", "-dash", "x/y", None])
def test_invalid_names_are_rejected(name: object) -> None:
    with pytest.raises(PluginError, match="invalid name"):
        Registry("widget").add(name, 1, plugin="p")  # type: ignore[arg-type]


def test_unknown_name_on_an_empty_registry() -> None:
    with pytest.raises(NotAvailableError, match=r"^widget 'x' is not available \(plugin may not be installed\); available: none$"):
        Registry("widget").get("x")


def test_a_lazy_entry_is_imported_on_first_use_only() -> None:
    import sys

    sys.modules.pop("cci_builtin_plugins.network.open", None)
    registry: Registry[type] = Registry("network policy")
    registry.add("open", Lazy("open", "cci_builtin_plugins.network.open:OpenPolicy"), plugin="p")
    assert registry.names() == ["open"] and "cci_builtin_plugins.network.open" not in sys.modules
    policy = registry.get("open")
    assert policy.__name__ == "OpenPolicy" and registry.entries()[0].item is policy


@pytest.mark.parametrize(("reference", "message"), [
    ("no_such_module_xyz:Thing", "plugin 'p' registered 'open' as 'no_such_module_xyz:Thing', which cannot be loaded"),
    ("cci_builtin_plugins.network.open:Missing", "which cannot be loaded"),
    ("cci_builtin_plugins.network.restricted:RestrictedPolicy", "but cci_builtin_plugins.network.restricted:"
                                                                "RestrictedPolicy is named 'restricted'"),
])
def test_a_lazy_entry_that_cannot_be_loaded_names_the_plugin(reference: str, message: str) -> None:
    registry: Registry[type] = Registry("network policy")
    registry.add("open", Lazy("open", reference), plugin="p")
    with pytest.raises(PluginError) as caught:
        registry.get("open")
    assert message in str(caught.value) and "plugin 'p'" in str(caught.value)


# -- config sections plugins declare -------------------------------------------------------------------------------


class OfficeSettings(NamedTuple):
    """Declared in a module that postpones annotations, as a plugin's may."""

    proxy: Annotated[str, Setting("The office proxy's address.")] = "203.0.113.8"


def _office_settings() -> type:
    return OfficeSettings


def test_a_section_declared_by_two_plugins_names_both() -> None:
    from cci_core.registry import Register, Registries

    registries = Registries()
    Register(registries, "office-a").add_settings("office", _office_settings())
    with pytest.raises(PluginError) as caught:
        Register(registries, "office-b").add_settings("office", _office_settings())
    assert str(caught.value).startswith("config section 'office' is registered twice: by plugin 'office-a' and by "
                                        "plugin 'office-b'")
    assert registries.config_sections() == {"office": (registries.settings.get("office"), "office-a")}


@pytest.mark.parametrize("section", ["network", "defaults", "profiles", "plugins"])
def test_a_section_of_the_core_cannot_be_declared_by_a_plugin(section: str) -> None:
    from cci_core.registry import Register, Registries

    with pytest.raises(PluginError) as caught:
        Register(Registries(), "office").add_settings(section, _office_settings())
    assert f"plugin 'office' declared the config section [{section}], which is cci's own (core)" in str(caught.value)


def test_a_section_that_is_not_a_schema_is_refused_naming_the_plugin() -> None:
    from typing import NamedTuple

    from cci_core.registry import Register, Registries

    class Untyped(NamedTuple):
        proxy: str = "x"

    register = Register(Registries(), "office")
    with pytest.raises(PluginError, match=r"plugin 'office' declared the config section \[office\] with Untyped: "
                                          r"key 'proxy' is not annotated"):
        register.add_settings("office", Untyped)
    with pytest.raises(PluginError, match="is not a NamedTuple class"):
        register.add_settings("office", dict)
    with pytest.raises(PluginError, match="invalid name 'Office-1'"):
        register.add_settings("Office-1", _office_settings())


def test_a_declared_section_is_listed_as_provided_without_changing_the_kind() -> None:
    from cci_core.plugin_manager import PluginInfo
    from cci_core.registry import Register, Registries

    registries = Registries()
    Register(registries, "office").add_settings("office", _office_settings())
    assert registries.provided_by("office") == ["settings:office"]
    info = PluginInfo("office", "d", "1", False, True, "m", provides=("network policy:office", "settings:office"))
    assert (info.kind, info._replace(provides=("settings:office",)).kind) == ("network policy", "settings")
