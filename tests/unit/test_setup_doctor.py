"""The ``cci doctor`` checks issue 14 added: a policy network can be made, the image carries the tool."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from cci_core.config import Config, Override, load_config
from cci_core.errors import NotFoundError
from cci_builtin_plugins.incus.doctor import PROBE_PREFIX, _Server, image_check, subnet_check

NO_SUBNET = "Failed to automatically find an unused IPv4 subnet, manual configuration required"


class FakeAPI:
    """Incus's network list and creation: ``picks`` says whether an ``auto`` bridge gets a subnet."""

    def __init__(self, networks: list[dict[str, Any]], picks: bool = True) -> None:
        self.networks = networks
        self.picks = picks
        self.calls: list[tuple[str, str]] = []

    def get(self, path: str, action: str, **params: Any) -> Any:
        assert path == "/1.0/networks", path
        return self.networks

    def call(self, method: str, path: str, action: str, body: Any = None, **kwargs: Any) -> Any:
        self.calls.append((method, path))
        if method == "POST" and not self.picks:
            # looked up now: another test may have imported the Incus plugin's modules afresh
            raise importlib.import_module("cci_builtin_plugins.incus.errors").APIError(action, 500, NO_SUBNET)
        return {}


class FakeServer(_Server):
    def __init__(self, config: Config, api: FakeAPI | None = None, resources: dict[str, Any] | None = None) -> None:
        super().__init__(config, {})
        self.__dict__["api"] = api
        self.resources = resources or {}

    def read(self, action: str, *path: str) -> Any:
        try:
            return self.resources["/".join(path)]
        except KeyError:
            raise NotFoundError(f"{action}: not found") from None


def config(tmp_path: Path, **values: Any) -> Config:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    return load_config(workspace, environ={}, system_file=tmp_path / "none.toml", user_file=tmp_path / "none.toml",
                       overrides=[Override(key, value, "--flag") for key, value in values.items()])


def bridge(name: str, address: str) -> dict[str, Any]:
    return {"name": name, "managed": True, "type": "bridge", "config": {"ipv4.address": address}}


def test_a_recorded_range_with_free_24s_is_ok(tmp_path: Path) -> None:
    settings = config(tmp_path, **{"incus.network_subnets": "10.150.0.0/23"})
    api = FakeAPI([bridge("cci-restricted", "10.150.1.1/24")])
    check = subnet_check(FakeServer(settings, api), settings)
    assert check.status == "ok"
    assert check.detail == "free /24s left in 10.150.0.0/23 (next: 10.150.0.1/24)"
    assert api.calls == []  # nothing made


def test_a_recorded_range_with_no_free_24_fails_with_the_setup_fix(tmp_path: Path) -> None:
    settings = config(tmp_path, **{"incus.network_subnets": "10.150.0.0/23"})
    api = FakeAPI([bridge("a", "10.150.0.1/24"), bridge("b", "10.150.1.1/24")])
    check = subnet_check(FakeServer(settings, api), settings)
    assert check.status == "fail"
    assert check.detail == ("no free /24 left in [incus] network_subnets (10.150.0.0/23, set by --flag): "
                            "no policy network can be made")
    assert check.fix == "remove that setting and run 'cci setup' (it records a free range), or set a larger range"


def test_auto_when_incus_cannot_pick_fails_with_the_setup_fix(tmp_path: Path) -> None:
    settings = config(tmp_path)
    api = FakeAPI([], picks=False)
    check = subnet_check(FakeServer(settings, api), settings)
    assert check.status == "fail"
    assert "Incus cannot find a free IPv4 subnet for a new bridge here" in check.detail
    assert check.fix == "run 'cci setup' (it records a free range)"
    assert [method for method, _ in api.calls] == ["POST"]


def test_auto_when_incus_picks_is_ok_and_the_probe_bridge_is_deleted(tmp_path: Path) -> None:
    settings = config(tmp_path)
    api = FakeAPI([])
    check = subnet_check(FakeServer(settings, api), settings)
    assert check.status == "ok"
    (post, _), (delete, path) = api.calls
    assert (post, delete) == ("POST", "DELETE")
    assert path.startswith(f"/1.0/networks/{PROBE_PREFIX}") and len(path.rsplit("/", 1)[1]) <= 15


def test_the_open_policy_needs_no_policy_network(tmp_path: Path) -> None:
    settings = config(tmp_path, **{"network.mode": "open"})
    assert subnet_check(FakeServer(settings, FakeAPI([], picks=False)), settings).status == "ok"


def image_server(tmp_path: Path, properties: dict[str, str]) -> FakeServer:
    return FakeServer(config(tmp_path), resources={"images/aliases/cci": {"target": "abcdef0123456789"},
                                                   "images/abcdef0123456789": {"properties": properties}})


def test_an_image_recording_the_tool_version_is_ok(tmp_path: Path) -> None:
    check = image_check(image_server(tmp_path, {"cci.tool.claude.version": "2.1.332"}), "cci", "claude")
    assert (check.status, check.detail) == ("ok", "cci (abcdef012345) with claude 2.1.332")


def test_an_image_without_the_tool_version_is_a_warning_naming_cci_build(tmp_path: Path) -> None:
    check = image_check(image_server(tmp_path, {"os": "debian"}), "cci", "claude")
    assert check.status == "warn"
    assert check.detail == ("cci (abcdef012345) records no claude version (image property cci.tool.claude.version): "
                            "it may not carry claude")
    assert check.fix.startswith("rebuild it with 'cci build --force'")
    other = image_check(image_server(tmp_path, {"cci.tool.claude.version": "1"}), "cci", "codex")
    assert other.status == "warn" and "cci.tool.codex.version" in other.detail


def test_a_missing_image_names_cci_setup(tmp_path: Path) -> None:
    check = image_check(image_server(tmp_path, {}), "other", "claude")
    assert check.status == "fail"
    assert check.fix.startswith("run 'cci setup' (it builds the image)")


def test_a_probe_bridge_an_interrupted_doctor_left_is_deleted_by_the_next_one(tmp_path: Path) -> None:
    settings = config(tmp_path)
    left = {"name": f"{PROBE_PREFIX}4242", "managed": True, "type": "bridge", "used_by": [],
            "description": "cci doctor: can Incus pick a subnet? (deleted at once)", "config": {}}
    mine = {**left, "name": f"{PROBE_PREFIX}77", "description": "mine"}  # not a probe: kept
    api = FakeAPI([left, mine, bridge("incusbr0", "10.0.3.1/24")])
    assert subnet_check(FakeServer(settings, api), settings).status == "ok"
    deleted = [path.rsplit("/", 1)[1] for method, path in api.calls if method == "DELETE"]
    assert deleted[0] == left["name"] and len(deleted) == 2 and mine["name"] not in deleted


def test_an_interrupted_probe_is_deleted_all_the_same(tmp_path: Path) -> None:
    import pytest

    class Interrupted(FakeAPI):
        def call(self, method: str, path: str, action: str, body: Any = None, **kwargs: Any) -> Any:
            super().call(method, path, action, body, **kwargs)
            if method == "POST":  # Incus made it, and then Ctrl+C
                raise KeyboardInterrupt

    settings = config(tmp_path)
    api = Interrupted([])
    with pytest.raises(KeyboardInterrupt):
        subnet_check(FakeServer(settings, api), settings)
    assert [method for method, _ in api.calls] == ["POST", "DELETE"]


def test_a_probe_another_doctor_deleted_meanwhile_is_still_an_answer(tmp_path: Path) -> None:
    class Swept(FakeAPI):
        def call(self, method: str, path: str, action: str, body: Any = None, **kwargs: Any) -> Any:
            super().call(method, path, action, body, **kwargs)
            if method == "DELETE":
                raise importlib.import_module("cci_builtin_plugins.incus.errors").APINotFound(action, 404, "not found")
            return {}

    settings = config(tmp_path)
    assert subnet_check(FakeServer(settings, Swept([])), settings).status == "ok"


def proc_route(*networks: str) -> str:
    """``/proc/net/route`` with these destinations (little-endian hex, as the kernel writes them)."""
    import ipaddress

    def hexed(address: ipaddress.IPv4Address) -> str:
        return int.from_bytes(address.packed, "little").to_bytes(4, "big").hex().upper()

    rows = ["Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT"]
    for text in ("0.0.0.0/0", *networks):
        network = ipaddress.IPv4Network(text)
        rows.append(f"eth0\t{hexed(network.network_address)}\t00000000\t0001\t0\t0\t0\t{hexed(network.netmask)}\t0\t0\t0")
    return "\n".join(rows) + "\n"


def test_a_recorded_range_a_route_of_the_host_now_reaches_into_is_a_warning(tmp_path: Path,
                                                                            monkeypatch: Any) -> None:
    settings = config(tmp_path, **{"incus.network_subnets": "10.150.0.0/16"})
    api = FakeAPI([bridge("cci-restricted", "10.150.1.1/24")])
    routes = tmp_path / "route"
    monkeypatch.setitem(subnet_check.__globals__, "ROUTES", routes)  # the module subnet_check came from
    routes.write_text(proc_route("10.150.1.0/24", "192.168.1.0/24"))  # cci's own bridge, the LAN: fine
    assert subnet_check(FakeServer(settings, api), settings).status == "ok"
    routes.write_text(proc_route("10.150.1.0/24", "10.150.128.0/17"))  # a VPN came up since setup
    check = subnet_check(FakeServer(settings, api), settings)
    assert (check.status, check.detail) == ("warn", "the host has a route to 10.150.128.0/17 inside [incus] "
                                            "network_subnets (10.150.0.0/16, set by --flag): cci's networks there "
                                            "would cut it off")
    assert check.fix == "set it to a free range (remove it and run 'cci setup', which records one)"
