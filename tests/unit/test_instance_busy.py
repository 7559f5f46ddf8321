"""An update of an instance that another operation holds waits and retries: for an API operation (waited on), and
for the lock Incus holds alone while a container shuts itself down (no operation to wait for)."""

from __future__ import annotations

import importlib
import time
from typing import Any

import pytest

from cci_builtin_plugins.incus.errors import APIError

BUSY = 'Failed to create instance update operation: Instance is busy running a "stop" operation'


class BusyAPI:
    """Refuses updates as busy until ``free_at``; lists ``operations`` as running."""

    project = "default"

    def __init__(self, busy_for: float, operations: list[dict[str, Any]] | None = None) -> None:
        self.free_at = time.monotonic() + busy_for
        self.operations = operations or []
        self.patches: list[dict[str, Any]] = []
        self.waited: list[str] = []

    def call(self, method: str, path: str, action: str, body: Any = None, **_: Any) -> Any:
        if time.monotonic() < self.free_at:
            raise APIError(action, 400, BUSY)
        self.patches.append(body)
        return {}

    def get(self, path: str, action: str, **_: Any) -> Any:
        assert path == "/1.0/operations"
        return {"running": self.operations}

    def wait(self, path: str, action: str, timeout: float | None = None) -> Any:
        self.waited.append(path)
        self.free_at = time.monotonic()
        return {}


def container(api: BusyAPI) -> Any:
    """An instance on ``api``, of the module another test may have imported afresh (so that patches reach it)."""
    return importlib.import_module("cci_builtin_plugins.incus.container").IncusContainer(api, {"name": "cci-x-1"})


def test_an_update_during_a_shutdown_waits_for_the_lock_no_operation_shows() -> None:
    api = BusyAPI(busy_for=0.8)  # as measured: a poweroff inside holds the instance about 0.6 s
    container(api).set_labels({"state": "ending"})
    assert api.patches == [{"config": {"user.cci.state": "ending"}}]


def test_an_update_waits_on_a_running_operation_of_the_instance() -> None:
    operation = {"id": "op1", "resources": {"instances": ["/1.0/instances/cci-x-1?project=default"]}}
    other = {"id": "op2", "resources": {"instances": ["/1.0/instances/cci-x-10"]}}
    api = BusyAPI(busy_for=60, operations=[other, operation])
    container(api).set_labels({"state": "ending"})
    assert api.waited == ["/1.0/operations/op1"] and len(api.patches) == 1


def test_an_instance_busy_past_the_deadline_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.import_module("cci_builtin_plugins.incus.container"), "BUSY_TIMEOUT", 0.3)
    with pytest.raises(Exception, match="busy") as raised:
        container(BusyAPI(busy_for=60)).set_labels({"state": "ending"})
    assert type(raised.value).__name__ == "APIError"
