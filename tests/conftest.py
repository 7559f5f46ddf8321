"""Shared fixtures: an isolated home and config for every test, and the Incus gate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.incus_env import incus_problem


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads the real user's config, home or CCI_* variables."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith("CCI_") and not name.startswith("CCI_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setattr("cci_core.config.loader.SYSTEM_FILE", home / "etc-cci-config.toml")
    return home


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``incus`` fail (never skip) when the real daemon is not set up."""
    if item.get_closest_marker("incus"):
        problem = incus_problem()
        if problem:
            pytest.fail(f"Incus test environment missing: {problem}. Run 'sudo scripts/incus-test-env', "
                        "or deselect these tests with -m 'not incus'.", pytrace=False)
