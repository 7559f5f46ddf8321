"""The Incus side of the proxy policy without Incus: agent devices and variables, the proxy's users, its
plan kept in the ACL, stopping unused proxies, a reused container taken off its proxy, the request log's lines."""

from __future__ import annotations

import json
from email.message import Message
from types import SimpleNamespace
from typing import Any

import pytest

from cci_core.api import HostRule, NetworkPlan, ProxySpec, RequestRecord, Rule
from cci_builtin_plugins.incus import proxy

SOCKET_DIR = "/var/lib/incus"
BRIDGE = "cci-nonat-12345"
SOCKET = proxy.socket_path(SOCKET_DIR, "cci-test", BRIDGE)
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def _current_modules() -> None:
    """Another test may have imported cci's modules afresh: use those the code imports now (their classes)."""
    import importlib

    global proxy
    proxy = importlib.import_module("cci_builtin_plugins.incus.proxy")


def test_an_agent_behind_a_proxy_has_no_nic_only_the_proxy_device() -> None:
    devices = {"eth0": {"type": "nic", "network": "incusbr0"}, "eth1": {"type": "nic", "nictype": "macvlan"},
               "root": {"type": "disk", "path": "/"}}
    assert proxy.agent_devices(devices, SOCKET) == {
        "eth0": {"type": "none"}, "eth1": {"type": "none"},
        "cci-proxy": {"type": "proxy", "bind": "instance", "listen": "tcp:127.0.0.1:3128",
                      "connect": f"unix:{SOCKET}"}}
    # a profile without a NIC: eth0 is masked all the same (a profile may get one later)
    assert proxy.agent_devices({}, SOCKET)["eth0"] == {"type": "none"}


def test_the_proxy_socket_is_root_only_and_one_per_network_and_project() -> None:
    device = proxy.host_device(SOCKET)
    assert (device["bind"], device["listen"], device["connect"]) == ("host", f"unix:{SOCKET}", "tcp:127.0.0.1:3128")
    assert (device["mode"], device["uid"], device["gid"]) == ("0600", "0", "0")
    assert SOCKET.startswith(SOCKET_DIR + "/cci-proxy-") and SOCKET.endswith(".sock")
    others = {proxy.socket_path(SOCKET_DIR, "default", BRIDGE), proxy.socket_path(SOCKET_DIR, "cci-test", "cci-x")}
    assert SOCKET not in others and len(others) == 2


def test_an_agents_clients_go_through_the_proxy_and_trust_its_ca() -> None:
    environment = proxy.agent_environment()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert environment[f"environment.{name}"] == "http://127.0.0.1:3128"
    assert environment["environment.NO_PROXY"] == environment["environment.no_proxy"] == "localhost,127.0.0.1,::1"
    for name in ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        assert environment[f"environment.{name}"] == "/etc/cci/ca-certificates.crt"
    assert environment["environment.NODE_EXTRA_CA_CERTS"] == "/usr/local/share/ca-certificates/cci-proxy.crt"
    assert set(proxy.AGENT_KEYS) == {*environment, "user.cci.proxy"}
    assert proxy.bundle(b"IMAGE CA", CA) == b"IMAGE CA\n" + CA.encode()
    assert proxy.bundle(b"IMAGE CA\n", CA) == b"IMAGE CA\n" + CA.encode()
    assert proxy.bundle(b"", CA) == CA.encode()


def _instance(name: str, config: dict[str, str] | None = None, devices: dict[str, Any] | None = None,
              status: str = "Running") -> dict[str, Any]:
    return {"name": name, "status": status, "config": config or {}, "devices": devices or {}}


def _proxy_instance(bridge: str, status: str = "Running", wanted: float = 0, made: bool = True) -> dict[str, Any]:
    return _instance(proxy.proxy_name(bridge), {"user.cci.kind": "proxy", "user.cci.proxy-network": bridge,
                                                "user.cci.proxy-wanted": f"{wanted:.0f}",
                                                **({"user.cci.proxy-ca": CA} if made else {})},
                     {"cci-proxy": proxy.host_device(proxy.socket_path(SOCKET_DIR, "cci-test", bridge))}, status)


def _agent(name: str, bridge: str, bind: str = "instance") -> dict[str, Any]:
    device = {**proxy.agent_device(proxy.socket_path(SOCKET_DIR, "cci-test", bridge)), "bind": bind}
    return _instance(name, devices={"cci-proxy": device, "eth0": {"type": "none"}})


def test_a_proxys_users_are_the_agents_whose_device_reaches_its_socket() -> None:
    instances = [_proxy_instance(BRIDGE), _proxy_instance("cci-other", "Stopped"), _agent("a1", BRIDGE),
                 _agent("a2", "cci-other"), _agent("posing", BRIDGE, bind="host"), _instance("plain")]
    users = proxy.proxy_users(instances, lambda bridge: proxy.socket_path(SOCKET_DIR, "cci-test", bridge))
    assert users[BRIDGE] == {"agents": ["a1"], "proxy": proxy.proxy_name(BRIDGE), "status": "running", "wanted": 0.0,
                             "wanted_label": "0", "made": True}
    assert users["cci-other"]["agents"] == ["a2"] and users["cci-other"]["status"] == "stopped"
    assert set(users) == {BRIDGE, "cci-other"}


class FakeInstances:
    """``/1.0/instances`` of a fake Incus: listing, reading (with an ETag), PATCH, PUT and state changes."""

    def __init__(self, *instances: dict[str, Any]) -> None:
        self.instances = {item["name"]: item for item in instances}
        self.endpoint = SimpleNamespace(socket=f"{SOCKET_DIR}/unix.socket")
        self.project = "cci-test"
        self.calls: list[tuple[str, str]] = []

    def get(self, path: str, action: str, **params: Any) -> Any:
        if path == "/1.0/instances":
            return [{**item, "expanded_devices": item["devices"]} for item in self.instances.values()]
        name = path.rsplit("/", 1)[1]
        if name not in self.instances:
            # imported now: another test may have made cci's modules afresh (the class the code catches)
            from cci_builtin_plugins.incus.errors import APINotFound

            raise APINotFound(action, 404, "Instance not found")
        return {**self.instances[name], "expanded_devices": self.instances[name]["devices"]}

    def request(self, method: str, path: str, action: str, **kwargs: Any) -> Any:
        from cci_builtin_plugins.incus.rest import Response

        headers = Message()
        headers["ETag"] = "etag"
        return Response(200, headers, json.dumps({"metadata": self.get(path, action)}).encode())

    def call(self, method: str, path: str, action: str, body: Any = None, **kwargs: Any) -> Any:
        self.calls.append((method, path))
        name = path.split("/")[3]
        item = self.instances[name]
        if path.endswith("/state"):
            item["status"] = "Stopped" if body["action"] == "stop" else "Running"
        elif method == "PATCH":
            item["config"].update(body.get("config") or {})
            item["devices"].update(body.get("devices") or {})
        elif method == "PUT":
            item["config"], item["devices"] = body["config"], body["devices"]
        elif method == "DELETE":
            del self.instances[name]
        return {}


def test_only_running_proxies_no_agent_uses_and_no_launch_asked_for_lately_are_stopped() -> None:
    api = FakeInstances(_proxy_instance("cci-idle", wanted=1000), _proxy_instance("cci-asked", wanted=1995),
                        _proxy_instance("cci-used", wanted=1000), _agent("a1", "cci-used"),
                        _proxy_instance("cci-stopped", "Stopped", wanted=1000),
                        _proxy_instance("cci-being-made", wanted=0, made=False))  # another cci is making it
    assert proxy.stop_unused(api, now=2000) == [proxy.proxy_name("cci-idle")]  # type: ignore[arg-type]
    assert api.instances[proxy.proxy_name("cci-idle")]["status"] == "Stopped"
    assert api.instances[proxy.proxy_name("cci-asked")]["status"] == "Running"
    assert api.instances[proxy.proxy_name("cci-used")]["status"] == "Running"
    assert api.instances[proxy.proxy_name("cci-being-made")]["status"] == "Running"


def test_a_proxy_asked_for_between_the_listing_and_its_stop_is_not_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch asked for the proxy after stop_unused listed it idle: the stop is called off (its mark is a
    compare-and-set on the time the launch wrote)."""
    api = FakeInstances(_proxy_instance(BRIDGE, wanted=1000))
    listing = api.get

    def get(path: str, action: str, **params: Any) -> Any:
        found = listing(path, action, **params)
        if path == "/1.0/instances":  # right after the listing, a launch asks for the proxy
            api.instances[proxy.proxy_name(BRIDGE)]["config"][proxy.WANTED_KEY] = "1999"
        return found

    monkeypatch.setattr(api, "get", get)
    assert proxy.stop_unused(api, now=2000) == []  # type: ignore[arg-type]
    assert api.instances[proxy.proxy_name(BRIDGE)]["status"] == "Running"
    assert not api.instances[proxy.proxy_name(BRIDGE)]["config"].get(proxy.STOPPING_KEY)


def test_a_launch_after_a_stop_was_decided_waits_for_it_and_starts_the_proxy_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """stop_unused marked the proxy and is about to stop it when a launch asks for it: the launch does not take
    it for running (the stop would leave its agent without a proxy): it waits for the stop, then starts it."""
    from cci_builtin_plugins.incus.container import IncusContainer

    spec = ProxySpec((HostRule("allow", "example.com"),))
    marked = _proxy_instance(BRIDGE, "Running", wanted=1000)
    marked["config"].update({proxy.SPEC_KEY: proxy.spec_json(spec), proxy.TEMPLATE_KEY: proxy.template_digest(spec, ""),
                             proxy.STOPPING_KEY: "1999"})
    api = FakeInstances(marked)

    def stop_lands(self: Any, timeout: float = 60) -> bool:
        api.instances[self.name]["status"] = "Stopped"  # the stopper's stop
        return True

    started: list[dict[str, str]] = []
    monkeypatch.setattr(IncusContainer, "wait_stopped", stop_lands)
    monkeypatch.setattr(proxy.ProxyContainers, "wait_ready", lambda self, container, digest: started.append(
        dict(api.instances[container.name]["config"])))
    proxy.ProxyContainers(api, "cci-proxy", SOCKET_DIR).ensure(BRIDGE, spec)  # type: ignore[arg-type]
    assert api.instances[marked["name"]]["status"] == "Running" and len(started) == 1
    assert not started[0].get(proxy.STOPPING_KEY)  # its next stop_unused is a fresh decision


def test_a_stop_mark_whose_stopper_died_is_cleared_and_the_proxy_used_as_it_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_builtin_plugins.incus.container import IncusContainer

    marked = _proxy_instance(BRIDGE, "Running", wanted=1000)
    marked["config"][proxy.STOPPING_KEY] = "1999"
    api = FakeInstances(marked)
    waited: list[float] = []
    monkeypatch.setattr(IncusContainer, "wait_stopped", lambda self, timeout=60: waited.append(timeout) or False)
    instance = proxy.ProxyContainers(api, "cci-proxy", SOCKET_DIR).settled(marked["name"])  # type: ignore[arg-type]
    assert waited == [proxy.STOP_SETTLE_SECONDS] and instance["status"] == "Running"
    assert not api.instances[marked["name"]]["config"].get(proxy.STOPPING_KEY)  # the next launch does not wait


def test_a_proxy_is_labelled_after_a_stop_under_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Incus refuses updates while it stops the proxy ('busy running a stop operation'; CI saw the launch fail
    with it): the label waits for the stop, as the agents' updates do."""
    from cci_builtin_plugins.incus.errors import APIError

    api = FakeInstances(_proxy_instance(BRIDGE, wanted=1000))
    refusals = [APIError("labelling", 400, 'Instance is busy running a "stop" operation')]
    call = api.call

    def busy_once(method: str, path: str, action: str, body: Any = None, **kwargs: Any) -> Any:
        if method == "PATCH" and refusals:
            raise refusals.pop()
        return call(method, path, action, body, **kwargs)

    monkeypatch.setattr(api, "call", busy_once)
    monkeypatch.setattr(api, "get", lambda path, action, **params: {"running": []} if path == "/1.0/operations"
                        else FakeInstances.get(api, path, action, **params))
    proxy.ProxyContainers(api, "cci-proxy", SOCKET_DIR)._patch_config(  # type: ignore[arg-type]
        proxy.proxy_name(BRIDGE), {proxy.WANTED_KEY: "2000"})
    assert api.instances[proxy.proxy_name(BRIDGE)]["config"][proxy.WANTED_KEY] == "2000" and not refusals


def test_deleting_the_last_agent_stops_its_proxy() -> None:
    from cci_builtin_plugins.incus.container import IncusContainer

    api = FakeInstances(_proxy_instance(BRIDGE, wanted=0), _agent("a1", BRIDGE), _agent("a2", BRIDGE))
    for name, left in (("a1", "Running"), ("a2", "Stopped")):
        IncusContainer(api, api.get(f"/1.0/instances/{name}", ""), None).delete()  # type: ignore[arg-type]
        assert api.instances[proxy.proxy_name(BRIDGE)]["status"] == left


def _container(api: FakeInstances, name: str) -> Any:
    from cci_builtin_plugins.incus.container import IncusContainer

    container = IncusContainer(api, api.get(f"/1.0/instances/{name}", ""), None)  # type: ignore[arg-type]
    container.files = {"/etc/ssl/certs/ca-certificates.crt": b"IMAGE CAS\n"}
    container.pull_file = lambda path: container.files[path]
    container.push_file = lambda path, data, **_kw: container.files.__setitem__(path, data)
    container.make_directory = lambda path, **_kw: None
    return container


def test_a_container_is_put_behind_its_networks_proxy_and_taken_off_when_reused_without_one() -> None:
    with_ca = _proxy_instance(BRIDGE)
    with_ca["config"][proxy.CA_KEY] = CA
    api = FakeInstances(with_ca, _instance("agent", {"user.cci.kind": "session"},
                                           {"eth0": {"type": "nic", "network": "incusbr0"}}, "Stopped"))
    container = _container(api, "agent")
    container.configure({"environment.TERM": "xterm"}, [], BRIDGE)
    agent = api.instances["agent"]
    assert agent["devices"]["eth0"] == {"type": "none"}
    assert agent["devices"]["cci-proxy"]["connect"] == f"unix:{SOCKET}"
    assert agent["config"]["environment.HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert agent["config"]["environment.TERM"] == "xterm"
    assert container.files["/usr/local/share/ca-certificates/cci-proxy.crt"] == CA.encode()
    assert container.files["/etc/cci/ca-certificates.crt"] == b"IMAGE CAS\n" + CA.encode()

    container = _container(api, "agent")  # reused under a plan without proxy: its own NIC on that network
    container.configure({}, [], "cci-restricted")
    assert "cci-proxy" not in agent["devices"]
    assert agent["devices"]["eth0"]["type"] == "nic" and agent["devices"]["eth0"]["network"] == "cci-restricted"
    assert not [key for key in agent["config"] if key in proxy.AGENT_KEYS]
    assert agent["config"]["environment.TERM"] == "xterm"


def test_a_proxy_containers_own_device_is_never_taken_for_an_agents() -> None:
    api = FakeInstances(_proxy_instance(BRIDGE))
    container = _container(api, proxy.proxy_name(BRIDGE))
    container.configure({}, [], "cci-restricted")
    assert api.instances[proxy.proxy_name(BRIDGE)]["devices"]["cci-proxy"]["bind"] == "host"


def test_a_container_in_the_way_of_a_proxy_is_not_taken_for_it() -> None:
    from cci_core.api import BackendError

    api = FakeInstances(_instance(proxy.proxy_name(BRIDGE), {"user.cci.kind": "session"}))
    containers = proxy.ProxyContainers(api, "cci-proxy", SOCKET_DIR)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="in the way"):
        containers.find(BRIDGE)
    assert proxy.ca_of(api, BRIDGE) == ""  # type: ignore[arg-type]


def test_a_proxy_container_is_no_session_nor_an_orphan() -> None:
    from cci_core.session_record import SessionRecord

    record = SessionRecord.from_labels({"kind": "proxy", "proxy-network": BRIDGE})
    assert not record.is_session and record.kind is None


def test_the_proxy_spec_is_kept_with_the_plan_in_its_acl() -> None:
    from cci_builtin_plugins.incus.networks import acl_body, plan_of

    spec = ProxySpec((HostRule("allow", "*.example.com", (), "allowed_domains"),
                      HostRule("deny", "2001:db8::1", (8443,), "denied_domains")), {"api.example.com": "198.51.100.2"})
    plan = NetworkPlan("proxy", "x", "allow", (Rule("reject", ("10.0.0.0/8",), "private"),), proxy=spec)
    stored, _at = plan_of(acl_body(plan))
    assert stored.proxy == spec
    assert plan_of(acl_body(plan._replace(proxy=None)))[0].proxy is None


def test_the_squid_error_shown_is_its_fatal_line() -> None:
    log = "2026/12/03 kid1| Starting Squid\n2026/12/03 FATAL: Bungled squid.conf line 7: acl x\n\nsquid exited\n"
    assert proxy.squid_error(log) == "2026/12/03 FATAL: Bungled squid.conf line 7: acl x"
    assert proxy.squid_error("") == "no log"


def test_a_log_record_is_shown_on_one_line_with_what_the_agent_wrote_escaped() -> None:
    from cci_core.cli.network_cmd import _record_json, _record_line

    record = RequestRecord(time=0, method="GET", host="evil\x1b[2J.example", port=80, allowed=False,
                           rule="no rule", status=403, sent=10, received=20, duration_ms=3)
    line = _record_line(record)
    assert "\x1b" not in line and "\\x1b" in line and "\n" not in line
    assert " DENIED  GET " in line and ":80 403 [no rule] 10/20 B 3 ms" in line
    document = json.loads(_record_json(record))
    assert document["host"] == "evil\x1b[2J.example" and document["allowed"] is False
    assert set(document) == set(RequestRecord._fields)
    assert "\x1b" not in _record_json(record)


def test_the_log_of_a_network_without_proxy_is_refused_in_one_line() -> None:
    from cci_core.api import NotFoundError, PolicyNetwork, UsageError
    from cci_core.cli.network_cmd import _proxy_network

    plain = PolicyNetwork("cci-restricted", NetworkPlan("restricted", "", "reject", ()), 0, ("c1",))
    proxied = PolicyNetwork(BRIDGE, NetworkPlan("proxy", "x", "allow", (), proxy=ProxySpec(())), 0, ("c2",),
                            proxy=proxy.proxy_name(BRIDGE), proxy_status="running")

    def missing(name: str) -> None:
        raise NotFoundError(f"no container named {name!r}")

    state = SimpleNamespace(driver=SimpleNamespace(policy_networks=lambda: [plain, proxied], get=missing))
    assert _proxy_network(state, "c2") == BRIDGE and _proxy_network(state, BRIDGE) == BRIDGE
    with pytest.raises(UsageError, match="has no proxy"):
        _proxy_network(state, "c1")
    with pytest.raises(NotFoundError, match="no container named 'nope'"):
        _proxy_network(state, "nope")


def test_an_agent_starting_starts_its_proxy_stopped_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_builtin_plugins.incus import proxy as current  # the module the container's code imports now
    from cci_builtin_plugins.incus.container import IncusContainer

    waited: list[str] = []
    monkeypatch.setattr(current.ProxyContainers, "wait_ready", lambda self, container, digest: waited.append(digest))
    stopped = _proxy_instance(BRIDGE, "Stopped")
    stopped["config"][proxy.CONFIG_KEY] = "d1"
    agent = _agent("a1", BRIDGE)
    agent["config"][proxy.AGENT_PROXY_KEY] = proxy.proxy_name(BRIDGE)
    api = FakeInstances(stopped, agent)
    IncusContainer(api, api.get("/1.0/instances/a1", ""), None).start()  # type: ignore[arg-type]
    assert api.instances[proxy.proxy_name(BRIDGE)]["status"] == "Running" and waited == ["d1"]
    assert api.instances["a1"]["status"] == "Running"
    assert [path for _method, path in api.calls if path.endswith("/state")] == [
        f"/1.0/instances/{proxy.proxy_name(BRIDGE)}/state", "/1.0/instances/a1/state"]


def test_kill_all_and_cci_list_pass_a_proxy_container_by(tmp_path: Any) -> None:
    from cci_core.api import ContainerSpec
    from cci_core.config import Override, load_config
    from cci_core.plugin_manager import load_plugins
    from cci_core.session import SessionManager
    from tests.fakes import FakeDriver

    config = load_config(tmp_path, environ={}, overrides=[Override("defaults.driver", "fake", "test")])
    driver = FakeDriver(config)
    sessions = SessionManager(config, driver, load_plugins(entry_points=False), warn=lambda message: None)
    driver.create(ContainerSpec(proxy.proxy_name(BRIDGE), "cci-proxy",
                                labels={"kind": "proxy", "proxy-network": BRIDGE})).start()
    assert sessions.current() == []  # what 'cci list' shows
    from cci_core.cli.sessions import select

    assert select(driver.list_containers(), (), True) == []  # what 'cci kill --all' / 'shutdown --all' end
    assert sessions.cleanup().orphans == []  # what 'cci clean' deletes
    assert driver.get(proxy.proxy_name(BRIDGE)).status() == "running"


def test_a_missing_proxy_image_is_built_before_the_proxy_is_made() -> None:
    class Built(Exception):
        pass

    built: list[str] = []

    def build(alias: str) -> None:
        built.append(alias)
        raise Built  # (the fake Incus makes no instance): what matters is that it came first

    api = FakeInstances()
    containers = proxy.ProxyContainers(api, "my-proxy", SOCKET_DIR, build_image=build)  # type: ignore[arg-type]
    with pytest.raises(Built):
        containers.ensure(BRIDGE, ProxySpec((HostRule("allow", "example.com"),)))
    assert built == ["my-proxy"] and api.calls == []


def test_following_the_log_of_a_stopped_proxy_waits_for_it_and_goes_on_where_it_was(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_builtin_plugins.incus import proxy as current
    from cci_builtin_plugins.incus.errors import APIError

    monkeypatch.setattr(current.time, "sleep", lambda seconds: None)
    log = [b"line 1", b"line 2"]

    class Proxy:
        name = "cci-proxy-1"
        statuses = ["stopped", "stopped", "running"]
        tails: list[list[str]] = []

        state = "stopped"

        def status(self) -> str:
            Proxy.state = self.statuses.pop(0) if self.statuses else "stopped"
            return Proxy.state

        def pull_file_to(self, path: str, destination: Any) -> None:
            destination.write_bytes(b"\n".join(log) + b"\n")

        def exec(self, argv: list[str], *, stdout: Any, stderr: Any) -> None:
            if Proxy.state != "running":
                raise APIError("running tail", 400, "Instance is not running")
            self.tails.append(argv)
            skip = int(argv[2].lstrip("+")) - 1
            log.append(b"line 3")  # a request while it runs
            stdout(b"\n".join(log[skip:]) + b"\n")
            raise APIError("running tail", 400, "Instance is not running")  # then it stops

    lines = current._log_lines(Proxy(), follow=True)  # type: ignore[arg-type]
    assert [next(lines) for _ in range(3)] == [b"line 1", b"line 2", b"line 3"]
    assert Proxy.tails == [["tail", "-n", "+3", "-F", "/var/log/squid/cci-access.log"]]
    assert list(current._log_lines(Proxy(), follow=False)) == [b"line 1", b"line 2", b"line 3"]


def test_a_launch_marks_its_stopped_proxy_as_asked_for_before_starting_it(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ProxySpec((HostRule("allow", "example.com"),))
    stopped = _proxy_instance(BRIDGE, "Stopped", wanted=1000)
    stopped["config"][proxy.SPEC_KEY] = proxy.spec_json(spec)
    stopped["config"][proxy.TEMPLATE_KEY] = proxy.template_digest(spec, "")
    api = FakeInstances(stopped)
    wanted_at_start: list[str] = []
    monkeypatch.setattr(proxy.ProxyContainers, "start", lambda self, container, digest: wanted_at_start.append(
        api.instances[container.name]["config"][proxy.WANTED_KEY]))
    monkeypatch.setattr(proxy.time, "time", lambda: 2000.0)
    proxy.ProxyContainers(api, "cci-proxy", SOCKET_DIR).ensure(BRIDGE, spec)  # type: ignore[arg-type]
    assert wanted_at_start == ["2000"]  # the host guard, checking meanwhile, leaves it running


def test_a_proxy_configured_by_another_version_of_cci_is_configured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same rules, but squid's configuration as an older cci wrote it (say, before a security fix): cci's own
    is applied, and squid reconfigured while it runs."""
    spec = ProxySpec((HostRule("allow", "example.com"),))
    running = _proxy_instance(BRIDGE, "Running", wanted=1000)
    running["config"][proxy.SPEC_KEY] = proxy.spec_json(spec)
    api = FakeInstances(running)
    applied: list[bool] = []
    monkeypatch.setattr(proxy.ProxyContainers, "_apply", lambda self, container, spec, substitutions, trust_ca, *,
                        reconfigure: applied.append(reconfigure))
    monkeypatch.setattr(proxy.ProxyContainers, "_substitutions", lambda self, container: [])
    monkeypatch.setattr(proxy.ProxyContainers, "_locked", lambda self, container: __import__("contextlib").nullcontext())
    containers = proxy.ProxyContainers(api, "cci-proxy", SOCKET_DIR)  # type: ignore[arg-type]
    running["config"][proxy.TEMPLATE_KEY] = "written-by-an-older-cci"
    containers.ensure(BRIDGE, spec)
    assert applied == [True]
    running["config"][proxy.TEMPLATE_KEY] = proxy.template_digest(spec, "")
    containers.ensure(BRIDGE, spec)
    assert applied == [True]  # up to date: left alone


def test_a_log_larger_than_cci_reads_into_memory_is_read_all_the_same() -> None:
    """An agent can write more than 64 MiB of refused requests between two rotations of the log: cci network log
    failed ('has more than the 64 MiB that cci reads into memory') until the next rotation."""
    from cci_core.api import UsageError

    lines = [b'{"n":"%d"}' % number for number in range(3)]

    class Flooded:
        name = "cci-proxy-1"

        def status(self) -> str:
            return "stopped"

        def pull_file(self, path: str) -> bytes:
            raise UsageError(f"cci-proxy-1:{path} has more than the 64 MiB that cci reads into memory")

        def pull_file_to(self, path: str, destination: Any) -> None:
            destination.write_bytes(b"\n".join(lines) + b"\n")

    assert list(proxy._log_lines(Flooded(), follow=False)) == lines  # type: ignore[arg-type]


def test_a_proxy_stopped_while_a_launch_routes_its_secrets_takes_them_at_its_next_start() -> None:
    """Another cci (or the host guard) stopped the proxy as unused between the launch's check and its
    ``squid -k reconfigure``: the files are in place, the agent's start starts the proxy, which reads them."""
    from cci_core.api import BackendError

    running = _proxy_instance(BRIDGE, "Running", wanted=1000)
    api = FakeInstances(running)

    class StoppedMeanwhile:
        name = running["name"]
        pushed: list[str] = []

        def make_directory(self, path: str, **kwargs: Any) -> None:
            pass

        def push_file(self, path: str, data: bytes, **kwargs: Any) -> None:
            self.pushed.append(path)

        def exec(self, argv: list[str], **kwargs: Any) -> Any:
            raise BackendError(f"running {argv[0]} in {self.name}: Instance is not running")

        def status(self) -> str:
            return "stopped"

    container = StoppedMeanwhile()
    spec = ProxySpec((HostRule("allow", "example.com"),))
    proxy.ProxyContainers(api, "cci-proxy", SOCKET_DIR)._apply(container, spec, [], "", reconfigure=True)  # type: ignore[arg-type]
    assert container.pushed and api.instances[running["name"]]["config"][proxy.TEMPLATE_KEY]
