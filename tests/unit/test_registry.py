"""Registries: names, duplicates, lookups and attribution."""

from __future__ import annotations

import pytest

from cci_core.errors import NotAvailableError, PluginError
from cci_core.registry import Registry


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
