"""Meta-tests: every hookspec is documented, prefixed, and exercised by some test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from cci_core import hookspecs

SPECS = [
    function for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(function, "cci_spec")
]
TESTS = Path(__file__).resolve().parents[1]


def test_specs_exist_and_are_prefixed() -> None:
    assert len(SPECS) >= 9
    assert all(spec.__name__.startswith("cci_") for spec in SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.__name__)
def test_spec_documents_every_parameter(spec) -> None:
    doc = inspect.getdoc(spec) or ""
    assert doc.strip(), f"{spec.__name__} has no docstring"
    for parameter in inspect.signature(spec).parameters:
        assert f":param {parameter}:" in doc, f"{spec.__name__} does not document {parameter!r}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.__name__)
def test_spec_is_exercised_by_a_test(spec) -> None:
    uses = [
        path for path in TESTS.rglob("test_*.py")
        if path.name != "test_hookspecs.py" and spec.__name__ in path.read_text()
    ]
    assert uses, f"no test mentions {spec.__name__}"
