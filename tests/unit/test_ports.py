"""Published ports: the specs, the config and ``--port``, the Incus devices, the plugin and ``cci port``.

The real publishing (a server inside reached from the host, nothing else) is tested against
Incus in tests/integration/test_ports.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from cci_core.config import Override, load_config
from cci_core.driver import ContainerSpec, PublishedPort
from cci_core.errors import BackendError, ConfigError
from cci_core.ports import BadPort, PortInUse, parse_choice, parse_port, url
from tests.fakes import FakeContainer


# --- specs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, port", [
    ("8080:80", PublishedPort("127.0.0.1", 8080, 80)),
    ("0.0.0.0:1:65535", PublishedPort("0.0.0.0", 1, 65535)),
    ("[::1]:8080:80", PublishedPort("::1", 8080, 80)),
    ("[0:0::1]:8080:80", PublishedPort("::1", 8080, 80)),  # written canonically
    ("10.1.2.3:08080:80", PublishedPort("10.1.2.3", 8080, 80)),
])
def test_a_spec_is_address_host_port_and_container_port(spec: str, port: PublishedPort) -> None:
    assert parse_port(spec, "127.0.0.1") == port


@pytest.mark.parametrize("spec, message", [
    ("8080", "is not [ADDRESS:]HOST:CONTAINER"),
    ("8080:80:90:100", "is not [ADDRESS:]HOST:CONTAINER"),
    ("::1:8080:80", "an IPv6 address goes in brackets"),
    ("[::1]8080:80", "is not [ADDRESS:]HOST:CONTAINER"),
    ("[127.0.0.1]:8080:80", "is not [ADDRESS:]HOST:CONTAINER"),
    ("0:80", "the host port '0' is not a number from 1 to 65535"),
    ("8080:65536", "the container port '65536' is not a number from 1 to 65535"),
    ("+80:80", "the host port '+80'"),
    (" 80:80", "the host port ' 80'"),
    ("\u0661:80", "is not a number"),  # an Arabic-Indic one: int() would take it
    ("localhost:8080:80", "'localhost' is not an IP address (names and sockets cannot be published on)"),
    ("unix:8080:80", "is not an IP address"),
    ("[fe80::1%eth0]:8080:80", "is not an address a host listens on"),
    ("224.0.0.1:8080:80", "is not an address a host listens on"),
    ("255.255.255.255:8080:80", "is not an address a host listens on"),
])
def test_a_bad_spec_says_why(spec: str, message: str) -> None:
    with pytest.raises(BadPort) as caught:
        parse_port(spec, "127.0.0.1")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_url_of_a_wildcard_address_is_the_loopback() -> None:
    assert url(PublishedPort("0.0.0.0", 8080, 80)) == "http://127.0.0.1:8080"
    assert url(PublishedPort("::", 8080, 80)) == "http://[::1]:8080"
    assert url(PublishedPort("::1", 8080, 80)) == "http://[::1]:8080"
    assert url(PublishedPort("192.168.1.5", 8080, 80)) == "http://192.168.1.5:8080"


@pytest.mark.parametrize("text, choice", [
    ("8080", (8080, None, None)),
    ("8080:80", (8080, None, 80)),
    ("127.0.0.1:8080", (8080, "127.0.0.1", None)),
    ("[::1]:8080", (8080, "::1", None)),
    ("[::1]:8080:80", (8080, "::1", 80)),
])
def test_remove_names_a_port_by_its_host_port_and_what_else_it_likes(text: str, choice: tuple) -> None:
    assert tuple(parse_choice(text)) == choice


def test_a_choice_matches_only_what_it_names() -> None:
    port = PublishedPort("127.0.0.1", 8080, 80)
    assert parse_choice("8080").matches(port) and parse_choice("127.0.0.1:8080:80").matches(port)
    assert not parse_choice("8081").matches(port)
    assert not parse_choice("0.0.0.0:8080").matches(port)
    assert not parse_choice("8080:81").matches(port)
    with pytest.raises(BadPort):
        parse_choice("host:8080")


# --- the config and --port ----------------------------------------------------------------------------------


def _config(tmp_path: Path, text: str = "", *, ports: tuple[str, ...] = (), environ: dict | None = None):
    from cci_core.cli.options import GlobalOptions

    (tmp_path / "user.toml").write_text(text)
    return load_config(tmp_path, environ=environ or {}, user_file=tmp_path / "user.toml",
                       overrides=GlobalOptions(port=ports).overrides())


def test_port_flags_add_to_the_configured_ports(tmp_path: Path) -> None:
    from cci_core.ports import configured_ports

    config = _config(tmp_path, '[ports]\npublish = ["8080:80"]\naddress = "::1"\n', ports=("9000:90", "1.2.3.4:1:2"))
    assert config.ports.publish == ["8080:80", "9000:90", "1.2.3.4:1:2"]
    assert config.sources["ports.publish"] == "--port"
    assert [config.source_of(f"ports.publish[{index}]") for index in range(3)] == \
        [f"{tmp_path / 'user.toml'}:2", "--port", "--port"]
    assert configured_ports(config) == [PublishedPort("::1", 8080, 80), PublishedPort("::1", 9000, 90),
                                        PublishedPort("1.2.3.4", 1, 2)]


@pytest.mark.parametrize("text, ports, environ, message", [
    ('[ports]\npublish = ["8080:80", "localhost:1:2"]\n', (), None,
     "user.toml:2: ports.publish: 'localhost:1:2': 'localhost' is not an IP address"),
    ('[ports]\npublish = ["8080:80"]\n', ("8080:90",), None,
     "--port: ports.publish: host port 8080 is published twice ('8080:80' and '8080:90')"),
    ("", ("80:99999",), None, "--port: ports.publish: '80:99999': the container port '99999' is not a number"),
    ('[ports]\naddress = "localhost"\n', (), None, "user.toml:2: ports.address: 'localhost' is not an IP address"),
    ("", (), {"CCI_PORTS_PUBLISH": "1:2,3"}, "env CCI_PORTS_PUBLISH: ports.publish: '3' is not"),
])
def test_a_bad_port_in_the_config_or_a_flag_names_where_it_came_from(
        tmp_path: Path, text: str, ports: tuple[str, ...], environ: dict | None, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, text, ports=ports, environ=environ)
    assert message in str(caught.value)


# --- the Incus devices ----------------------------------------------------------------------------------------


def test_a_port_is_a_host_bound_proxy_device_to_the_containers_loopback() -> None:
    from cci_builtin_plugins.incus import ports

    assert ports.device(PublishedPort("127.0.0.1", 8080, 80)) == {
        "type": "proxy", "bind": "host", "listen": "tcp:127.0.0.1:8080", "connect": "tcp:127.0.0.1:80"}
    assert ports.device(PublishedPort("::1", 8080, 80))["listen"] == "tcp:[::1]:8080"
    devices = {ports.device_name(port.host_port): ports.device(port)
               for port in (PublishedPort("::1", 9000, 90), PublishedPort("127.0.0.1", 8080, 80))}
    assert ports.published(devices) == [PublishedPort("127.0.0.1", 8080, 80), PublishedPort("::1", 9000, 90)]


@pytest.mark.parametrize("name, device", [
    ("cci-proxy", {"type": "proxy", "bind": "instance", "listen": "tcp:127.0.0.1:3128",
                   "connect": "unix:/var/lib/incus/cci-proxy-x.sock"}),  # the proxy policy's egress device
    ("cci-port-8080", {"type": "proxy", "bind": "instance", "listen": "tcp:127.0.0.1:8080",
                       "connect": "tcp:127.0.0.1:80"}),
    ("cci-port-8080", {"type": "proxy", "bind": "host", "listen": "tcp:127.0.0.1:8080",
                       "connect": "tcp:127.0.0.1:80", "nat": "true"}),
    ("cci-port-8080", {"type": "proxy", "bind": "host", "listen": "tcp:127.0.0.1:8080",
                       "connect": "tcp:10.0.0.1:80"}),
    ("cci-port-8080", {"type": "proxy", "bind": "host", "listen": "unix:/run/x.sock",
                       "connect": "tcp:127.0.0.1:80"}),
    ("cci-port-9090", {"type": "proxy", "bind": "host", "listen": "tcp:127.0.0.1:8080",
                       "connect": "tcp:127.0.0.1:80"}),  # a name that is not its port's
    ("web", {"type": "proxy", "bind": "host", "listen": "tcp:127.0.0.1:8080", "connect": "tcp:127.0.0.1:80"}),
    ("eth0", {"type": "nic", "network": "x"}),
])
def test_only_devices_of_that_shape_and_name_are_published_ports(name: str, device: dict) -> None:
    from cci_builtin_plugins.incus.ports import published

    assert published({name: device}) == []


def _api(local: bool = True, instances: list | None = None) -> SimpleNamespace:
    endpoint = SimpleNamespace(socket="/var/lib/incus/unix.socket" if local else None)
    return SimpleNamespace(endpoint=endpoint, get=lambda path, action, recursion=0: instances or [])


def _listening(address: str = "127.0.0.1") -> socket.socket:
    server = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    server.bind((address, 0))
    server.listen(1)
    return server


def test_a_taken_host_port_is_one_line_naming_the_container_that_holds_it() -> None:
    from cci_builtin_plugins.incus import ports

    with _listening() as server:
        port = PublishedPort("127.0.0.1", server.getsockname()[1], 80)
        holder = {"name": "cci-abc-1", "status": "Running",
                  "expanded_devices": {ports.device_name(port.host_port): ports.device(port)}}
        with pytest.raises(BackendError) as caught:
            ports.check_free(_api(instances=[holder]), port)
        assert caught.value.message == f"127.0.0.1:{port.host_port} is in use on the host (published by cci-abc-1)"
        assert isinstance(caught.value, PortInUse) and caught.value.holder == "cci-abc-1"
        with pytest.raises(PortInUse) as caught:  # the container asking holds nothing against itself
            ports.check_free(_api(instances=[holder]), port, exclude="cci-abc-1")
        assert caught.value.holder is None
        with pytest.raises(BackendError) as caught:  # a stopped container holds nothing
            ports.check_free(_api(instances=[{**holder, "status": "Stopped"}]), port)
        assert caught.value.message == f"127.0.0.1:{port.host_port} is in use on the host"
        ports.check_free(_api(local=False), port)  # a remote Incus: its host's ports are not this one's
    ports.check_free(_api(), port)  # free again


def test_an_address_of_no_interface_here_is_one_line() -> None:
    from cci_builtin_plugins.incus import ports

    with pytest.raises(BackendError, match=r"^192\.0\.2\.222 is not an address of this host"):
        ports.check_free(_api(), PublishedPort("192.0.2.222", 8080, 80))


def test_a_start_that_lost_the_port_is_told_apart_from_other_failures() -> None:
    from cci_builtin_plugins.incus import ports

    with _listening() as server:
        taken = PublishedPort("127.0.0.1", server.getsockname()[1], 80)
        failure = ports.port_failure(_api(), "c", [taken], "Error occurred when starting proxy device: Error: ...")
        assert failure is not None and failure.message == f"127.0.0.1:{taken.host_port} is in use on the host"
    free = PublishedPort("127.0.0.1", taken.host_port, 80)
    assert ports.port_failure(_api(), "c", [free], "Failed to mount the workspace") is None
    detail = ("Error occurred when starting proxy device: Error: Failed to listen on 127.0.0.1:8080: listen tcp "
              "127.0.0.1:8080: bind: address already in use")
    failure = ports.port_failure(_api(local=False), "c", [PublishedPort("127.0.0.1", 8080, 80)], detail)
    assert failure is not None and failure.message == "127.0.0.1:8080 is in use on the host"


# --- the plugin ---------------------------------------------------------------------------------------------


def test_the_plugin_publishes_the_configured_ports_and_says_so_in_the_brief(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cci_builtin_plugins.ports import plugin
    from tests.fakes import FakeContainer

    config = _config(tmp_path, '[ports]\npublish = ["8080:3000"]\n', ports=("0.0.0.0:9000:9000",))
    ctx = SimpleNamespace(config=config, container_name="cci-abc-1")
    container = FakeContainer("cci-abc-1")
    assert plugin.cci_sandbox_brief(ctx=ctx, container=container)[0].startswith("Published ports: none.")
    plugin.cci_pre_start(ctx=ctx, container=container)
    assert container.published_ports() == [PublishedPort("127.0.0.1", 8080, 3000),
                                           PublishedPort("0.0.0.0", 9000, 9000)]
    warned = capsys.readouterr().err.splitlines()
    assert warned == ["cci: warning: published port 0.0.0.0:9000 is reachable from the network, not only from "
                      "this machine: whoever reaches that address talks to the server in the container"]
    listed, ask = plugin.cci_sandbox_brief(ctx=ctx, container=container)
    assert "- container port 3000: the user opens http://127.0.0.1:8080" in listed
    assert "- container port 9000: the user opens http://127.0.0.1:9000" in listed
    assert "cci port add cci-abc-1 HOST:CONTAINER" in ask


class _Taken(FakeContainer):
    """A stopped container whose host ports 5173 and 6006 another cci container publishes, and 7000 a process."""

    def publish_port(self, port: PublishedPort) -> None:
        from cci_core.ports import PortInUse

        holders = {5173: "cci-abc-1", 6006: "cci-xyz-2", 7000: None}
        if port.host_port in holders:
            raise PortInUse(port, holders[port.host_port])
        super().publish_port(port)


def test_a_configured_port_another_cci_container_publishes_is_skipped_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cci_builtin_plugins.ports import plugin

    config = _config(tmp_path, '[ports]\npublish = ["5173:5173", "8080:3000"]\n')
    container = _Taken("cci-abc-2")
    container.ports[6006] = PublishedPort("127.0.0.1", 6006, 6006)  # kept from an earlier 'cci port add'
    plugin.cci_pre_start(ctx=SimpleNamespace(config=config, container_name="cci-abc-2"), container=container)
    assert container.published_ports() == [PublishedPort("127.0.0.1", 8080, 3000)]
    assert capsys.readouterr().err.splitlines() == [
        "cci: warning: 127.0.0.1:5173 is not published for this session: cci-abc-1 publishes it (once it is free, "
        "'cci port add cci-abc-2 127.0.0.1:5173:5173' publishes it here)",
        "cci: warning: 127.0.0.1:6006 is not published for this session: cci-xyz-2 publishes it (once it is free, "
        "'cci port add cci-abc-2 127.0.0.1:6006:6006' publishes it here)"]


@pytest.mark.parametrize("text, flags", [
    ("", ("5173:5173",)),  # named on this command line: the user wants it for this session
    ('[ports]\npublish = ["7000:7000"]\n', ()),  # held by something that is not cci
])
def test_a_port_named_on_the_command_line_or_held_by_no_cci_container_stays_an_error(
        tmp_path: Path, text: str, flags: tuple[str, ...]) -> None:
    from cci_builtin_plugins.ports import plugin
    from cci_core.ports import PortInUse

    config = _config(tmp_path, text, ports=flags)
    with pytest.raises(PortInUse):
        plugin.cci_pre_start(ctx=SimpleNamespace(config=config, container_name="cci-abc-2"),
                             container=_Taken("cci-abc-2"))


# --- cci port -----------------------------------------------------------------------------------------------


@pytest.fixture
def fake_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cci_core.cli import port_cmd
    from cci_core.cli.main import cli
    from tests.fakes import FakeDriver

    config = load_config(tmp_path, environ={}, overrides=[Override("ports.address", "::1", "test")])
    driver = FakeDriver(config)
    session = driver.create(ContainerSpec("cci-abc-1", "img", labels={"kind": "session", "workspace": str(tmp_path),
                                                                    "session": "s1"}))
    driver.create(ContainerSpec("other", "img"))
    monkeypatch.setattr(port_cmd, "get_state", lambda ctx: SimpleNamespace(driver=driver, config=config))

    def run(*args: str):
        return CliRunner().invoke(cli, ["--workspace", str(tmp_path), "port", *args])

    return run, session


def test_port_add_list_remove(fake_cli) -> None:
    run, session = fake_cli
    added = run("add", "cci-abc-1", "8080:80", "127.0.0.1:9000:90")
    assert added.exit_code == 0, added.output
    assert session.published_ports() == [PublishedPort("::1", 8080, 80), PublishedPort("127.0.0.1", 9000, 90)]
    listed = json.loads(run("list", "cci-abc-1", "--format", "json").output)
    assert listed == {"container": "cci-abc-1", "ports": [
        {"address": "::1", "host_port": 8080, "container_port": 80, "url": "http://[::1]:8080"},
        {"address": "127.0.0.1", "host_port": 9000, "container_port": 90, "url": "http://127.0.0.1:9000"}]}
    assert run("list", "cci-abc-1").output.splitlines()[0].split() == ["ADDRESS", "HOST", "CONTAINER", "OPEN"]
    assert run("remove", "cci-abc-1", "8080", "127.0.0.1:9000:90").exit_code == 0
    assert session.published_ports() == []
    assert run("list", "cci-abc-1").output == "cci-abc-1 publishes no ports\n"


@pytest.mark.parametrize("args, message", [
    (("add", "cci-abc-1", "8080:80", "localhost:1:2"), "'localhost:1:2': 'localhost' is not an IP address"),
    (("add", "cci-abc-1", "8080:80", "8080:81"), "host port 8080 is given twice, or cci-abc-1 publishes it already"),
    (("add", "cci-abc-1", "7000:70"), "host port 7000 is given twice, or cci-abc-1 publishes it already"),
    (("add", "other", "8080:80"), "other is not a cci session container"),
    (("add", "nothere", "8080:80"), "no container named 'nothere'"),
    (("remove", "cci-abc-1", "7000", "8080"), "cci-abc-1 publishes no port 8080"),
    (("remove", "cci-abc-1", "0.0.0.0:7000"), "cci-abc-1 publishes no port 0.0.0.0:7000"),
    (("remove", "cci-abc-1", "name:7000"), "'name:7000': 'name' is not an IP address"),
])
def test_bad_port_commands_are_one_line_and_change_nothing(fake_cli, args: tuple[str, ...], message: str) -> None:
    run, session = fake_cli
    session.publish_port(PublishedPort("::1", 7000, 70))
    result = run(*args)
    assert result.exit_code != 0
    assert result.output.count("\n") == 1 and message in result.output, result.output
    assert session.published_ports() == [PublishedPort("::1", 7000, 70)]


def test_an_add_that_fails_half_way_takes_back_what_it_published(fake_cli) -> None:
    run, session = fake_cli
    publish = session.publish_port

    def refuse_the_second(port: PublishedPort) -> None:
        if port.host_port == 9000:
            raise BackendError("127.0.0.1:9000 is in use on the host")
        publish(port)

    session.publish_port = refuse_the_second
    result = run("add", "cci-abc-1", "8080:80", "9000:90")
    assert (result.exit_code, result.output) == (4, "cci: 127.0.0.1:9000 is in use on the host\n")
    assert session.published_ports() == []


def test_a_change_on_a_running_session_rewrites_its_brief(fake_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core import sandbox_brief
    from cci_core.cli import sessions
    from cci_core.errors import CciError

    run, session = fake_cli
    rewritten: list[tuple[str, str, list[int]]] = []

    def rewrite(manager: str, container) -> bool:  # type: ignore[no-untyped-def]
        rewritten.append((manager, container.name, [port.host_port for port in container.published_ports()]))
        return True

    monkeypatch.setattr(sessions, "manager_for", lambda ctx: "the manager")
    monkeypatch.setattr(sandbox_brief, "rewrite_brief", rewrite)
    assert run("add", "cci-abc-1", "8080:80").exit_code == 0
    assert rewritten == []  # stopped: its next start writes the brief
    session.state = "running"
    assert run("add", "cci-abc-1", "9000:90").exit_code == 0
    assert run("remove", "cci-abc-1", "8080").exit_code == 0
    assert rewritten == [("the manager", "cci-abc-1", [8080, 9000]), ("the manager", "cci-abc-1", [9000])]

    def fail(manager: str, container) -> bool:  # type: ignore[no-untyped-def]
        raise CciError("Incus went away")

    monkeypatch.setattr(sandbox_brief, "rewrite_brief", fail)
    result = run("add", "cci-abc-1", "7000:70")
    assert result.exit_code == 0 and session.ports.keys() == {7000, 9000}
    assert "cci: warning: the sandbox brief of cci-abc-1 was not rewritten: Incus went away" in result.output
