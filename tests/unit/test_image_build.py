"""Image building without a daemon: the DNS decision, image sources, the built-in script, the builder's steps."""

from __future__ import annotations

import pytest

from cci_core.config import load_config
from cci_core.errors import CciError
from cci_core.image_builder import BuildRequest
from cci_builtin_plugins.images import dns
from cci_builtin_plugins.images.commands import BUILTIN_SCRIPT
from cci_builtin_plugins.images.script_builder import ScriptBuilder
from cci_builtin_plugins.incus.driver import image_source
from tests import shellcheck
from tests.fakes import FakeDriver

STUB = "# managed by systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"


def test_the_host_only_stub_resolver_is_replaced_when_addresses_work() -> None:
    verdict = dns.judge(STUB, names_resolve=False, addresses_reachable=True)
    assert verdict == dns.DnsVerdict(True, "resolv.conf points at the host-only resolver 127.0.0.53")


def test_an_empty_resolv_conf_is_replaced_when_addresses_work() -> None:
    assert dns.judge("", names_resolve=False, addresses_reachable=True).reason == "resolv.conf names no nameserver"


def test_working_dns_is_left_alone_even_on_the_stub() -> None:
    assert not dns.judge(STUB, names_resolve=True, addresses_reachable=True).fix


def test_no_fix_without_any_connectivity() -> None:
    assert not dns.judge(STUB, names_resolve=False, addresses_reachable=False).fix


def test_the_fixed_resolv_conf_names_the_public_resolvers() -> None:
    assert dns.nameservers(dns.fixed_resolv_conf()) == list(dns.PUBLIC_RESOLVERS)
    assert dns.nameservers("nameserver 10.0.0.1 # lan\n#nameserver 9.9.9.9\nnameserver\n") == ["10.0.0.1"]


def test_image_sources() -> None:
    assert image_source("cci") == {"type": "image", "alias": "cci"}
    assert image_source("images:ubuntu/22.04") == {
        "type": "image", "mode": "pull", "protocol": "simplestreams",
        "server": "https://images.linuxcontainers.org", "alias": "ubuntu/22.04"}


def test_the_builtin_build_script_passes_shellcheck() -> None:
    result = shellcheck(BUILTIN_SCRIPT)
    assert result.returncode == 0, result.stdout


class ScriptedDriver(FakeDriver):
    """The fake driver whose containers answer the build script with a given exit code."""

    exit_code = 0

    def create(self, spec):  # type: ignore[no-untyped-def]
        container = super().create(spec)
        original = container.exec

        def exec_(argv, **kwargs):  # type: ignore[no-untyped-def]
            result = original(argv, **kwargs)
            return result._replace(exit_code=self.exit_code) if argv[0] == "bash" else result

        container.exec = exec_  # type: ignore[method-assign]
        return container


def test_a_build_publishes_then_moves_the_alias_and_deletes_its_container(tmp_path) -> None:  # type: ignore[no-untyped-def]
    driver = ScriptedDriver(load_config(tmp_path, environ={}))
    output: list[bytes] = []
    image = ScriptBuilder().build(driver, BuildRequest("demo", "base", b"true\n", offline=True), output.append)
    assert "demo" in image.aliases and any(alias.startswith("demo-") for alias in image.aliases)
    assert driver.containers == {}
    assert b"==> publishing demo-" in b"".join(output)


def test_a_failed_build_publishes_nothing_and_deletes_its_container(tmp_path) -> None:  # type: ignore[no-untyped-def]
    driver = ScriptedDriver(load_config(tmp_path, environ={}))
    driver.exit_code = 3
    with pytest.raises(CciError, match="the build script failed with exit code 3"):
        ScriptBuilder().build(driver, BuildRequest("demo", "base", b"exit 3\n", offline=True), lambda chunk: None)
    assert driver.images == {} and driver.containers == {}


def test_the_base_recipe_names_what_decides_the_image() -> None:
    from cci_builtin_plugins.images.debootstrap import DEFAULT_PACKAGES, metadata_yaml, recipe_from

    default = recipe_from(BuildRequest("base", "bookworm"))
    assert default.packages == tuple(sorted(DEFAULT_PACKAGES))
    same = recipe_from(BuildRequest("other-name", "bookworm", options={"packages": ",".join(DEFAULT_PACKAGES)}))
    assert same.digest() == default.digest()  # the alias and the package order do not matter
    for changed in (BuildRequest("base", "trixie"),
                    BuildRequest("base", "bookworm", options={"mirror": "http://mirror.example/debian"}),
                    BuildRequest("base", "bookworm", options={"packages": "tmux,sudo"})):
        assert recipe_from(changed).digest() != default.digest()
    yaml = metadata_yaml(default, "cci base", 1700000000)
    assert f"  cci.recipe: '{default.digest()}'" in yaml and "  cci.builder: debootstrap" in yaml
    assert "  release: bookworm" in yaml and "creation_date: 1700000000" in yaml


def test_a_base_build_needs_root_and_debootstrap(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cci_builtin_plugins.images import debootstrap

    driver = FakeDriver(load_config(tmp_path, environ={}))
    request = BuildRequest("base", "bookworm")
    monkeypatch.setattr(debootstrap.os, "geteuid", lambda: 1000)
    with pytest.raises(CciError, match="building a base image needs root"):
        debootstrap.DebootstrapBuilder().build(driver, request, lambda chunk: None)
    monkeypatch.setattr(debootstrap.os, "geteuid", lambda: 0)
    monkeypatch.setattr(debootstrap.shutil, "which", lambda name: None)
    with pytest.raises(CciError, match="debootstrap is not installed"):
        debootstrap.DebootstrapBuilder().build(driver, request, lambda chunk: None)
    assert driver.images == {}


def test_the_server_path_copies_the_tools_files_in_and_records_the_version(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cci_core.tool import ImageFile

    binary = tmp_path / "claude"
    binary.write_bytes(b"native claude")
    driver = ScriptedDriver(load_config(tmp_path, environ={}))
    pushed: dict[str, tuple[bytes, int]] = {}
    create = driver.create

    def recording_create(spec):  # type: ignore[no-untyped-def]
        container = create(spec)
        container.push_file = lambda path, data, mode=0o600, uid=0, gid=0: pushed.__setitem__(path, (data, mode))
        return container

    driver.create = recording_create  # type: ignore[method-assign]
    builder = ScriptBuilder((ImageFile("/usr/local/bin/claude", binary, 0o755),),
                            {"cci.tool.claude.version": "2.1.332"})
    image = builder.build(driver, BuildRequest("demo", "base", b"true\n", offline=True), lambda chunk: None)
    assert pushed["/usr/local/bin/claude"] == (b"native claude", 0o755)
    assert driver.images[image.fingerprint].properties["cci.tool.claude.version"] == "2.1.332"


def test_cci_build_source_server_fetches_the_tool_on_the_host_and_records_it(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from cci_builtin_plugins.tools.claude import ClaudeCode
    from cci_core.cli.main import cli
    from cci_core.cli.state import AppState
    from cci_core.tool import ImageFile

    binary = tmp_path / "claude"
    binary.write_bytes(b"native claude")
    driver = ScriptedDriver(load_config(tmp_path, environ={}))
    made = []
    create = driver.create

    def recording_create(spec):  # type: ignore[no-untyped-def]
        made.append(create(spec))
        return made[-1]

    driver.create = recording_create  # type: ignore[method-assign]
    monkeypatch.setattr(AppState, "driver", property(lambda self: driver))
    monkeypatch.setattr(ClaudeCode, "image_version", lambda self, fetch: "2.1.332")
    monkeypatch.setattr(ClaudeCode, "image_files",
                        lambda self, version, fetch, say: (ImageFile("/usr/local/bin/claude", binary, 0o755),))
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "build", "--source", "server", "--alias", "demo",
                                      "--offline"])
    assert result.exit_code == 0, result.output
    [container] = made
    assert container.files["/usr/local/bin/claude"][:2] == (b"native claude", 0o755)
    [image] = driver.images.values()
    assert "demo" in image.aliases and image.properties["cci.tool.claude.version"] == "2.1.332"


def test_cci_build_connects_before_it_probes_the_image_server(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The first request may start cci again (under sg, for a login without the Incus group): before it, the
    build has printed nothing and probed nothing, so the second run does not say its choice twice."""
    from click.testing import CliRunner

    from cci_builtin_plugins.images import source
    from cci_core.cli.main import cli
    from cci_core.cli.state import AppState
    from cci_core.errors import BackendError

    class Refused:
        def server_info(self) -> None:
            raise BackendError("permission denied on /var/lib/incus/unix.socket")

    probes = []
    monkeypatch.setattr(AppState, "driver", property(lambda self: Refused()))
    monkeypatch.setattr(source, "choose_source", lambda: probes.append("probe") or ("server", "it answered"))
    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "build"])
    assert (result.exit_code, probes) == (4, [])
    assert result.output == "cci: permission denied on /var/lib/incus/unix.socket\n"
