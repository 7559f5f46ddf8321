"""Registries: names, duplicates, lookups and attribution."""

from __future__ import annotations

import pytest

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
