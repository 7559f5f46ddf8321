"""The proxy image's build without root or a daemon: host commands faked, what goes into the tree checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cci_builtin_plugins.images import host_build, proxy_image
from cci_builtin_plugins.incus import squid
from cci_core.config import load_config
from cci_core.errors import CciError, UsageError
from cci_core.image_builder import BuildRequest
from tests.fakes import FakeDriver
from tests.unit.test_image_host_build import FakeHost


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHost]:
    from cci_builtin_plugins.images import debootstrap

    fake = FakeHost()
    for module in (host_build, debootstrap, proxy_image):
        monkeypatch.setattr(module, "run_host_command", fake.run)
    monkeypatch.setattr(host_build.os, "geteuid", lambda: 0)
    monkeypatch.setattr(host_build.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield fake


def request(tmp_path: Path, alias: str = "cci-proxy") -> BuildRequest:
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    return proxy_image.proxy_request(alias, mirror="http://mirror.test/debian", cache=str(cache))


def test_the_image_refuses_everything_until_cci_configures_it(host: FakeHost, tmp_path: Path) -> None:
    driver = FakeDriver(load_config(tmp_path, environ={}))
    image = proxy_image.ProxyImageBuilder().build(driver, request(tmp_path), lambda chunk: None)
    assert "cci-proxy" in image.aliases
    assert host.steps[0] == "debootstrap" and "apt-get install" not in host.steps
    conf = host.packed[f"rootfs{squid.SQUID_CONF}"].decode()
    access = [line for line in conf.splitlines() if line.startswith("http_access")]
    assert access == ["http_access deny all"]
    assert [line for line in conf.splitlines() if line.startswith("http_port")] == ["http_port 127.0.0.1:3128"]
    drop_in = host.packed["rootfs/etc/systemd/system/squid.service.d/cci.conf"].decode().splitlines()
    assert drop_in[1:4] == ["ExecStartPre=", f"ExecStartPre={proxy_image.PREPARE}",
                            "ExecStartPre=/usr/sbin/squid --foreground -z"]  # the CA before squid parses its config
    prepare = host.packed[f"rootfs{proxy_image.PREPARE}"].decode()
    assert " ".join(squid.ca_command()[:3]) in prepare and f"chmod 0640 {squid.CA_KEY}" in prepare
    assert f"{squid.CERTGEN} -c -s {squid.CERT_DB}.new" in prepare
    assert "squid -k rotate" in host.packed[f"rootfs{proxy_image.ROTATE}"].decode()
    assert {"systemctl enable", "systemctl mask", "tar"} <= set(host.steps)
    metadata = host.packed["metadata.yaml"].decode()
    digest = proxy_image.ProxyImageBuilder().recipe(request(tmp_path)).digest()
    assert f"cci.recipe: '{digest}'" in metadata and "cci.builder: proxy" in metadata
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [f"proxy-{digest}.tar.zst"]


def test_the_packages_are_squid_and_what_a_container_needs(host: FakeHost, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    run = host.run

    def record(argv: list[str], *args: object, **kwargs: object) -> None:
        seen.append(list(argv))
        run(argv, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(proxy_image, "run_host_command", record)
    proxy_image.ProxyImageBuilder().build(FakeDriver(load_config(tmp_path, environ={})), request(tmp_path),
                                          lambda chunk: None)
    debootstrap = next(argv for argv in seen if argv[0] == "debootstrap")
    assert debootstrap[:3] == ["debootstrap", "--variant=minbase",
                               "--include=ca-certificates,ifupdown,isc-dhcp-client,openssl,squid-openssl,systemd-sysv"]
    assert debootstrap[3:] == ["trixie", debootstrap[4], "http://mirror.test/debian"]


def test_the_same_recipe_is_imported_from_the_cache_and_a_change_is_another_recipe(host: FakeHost,
                                                                                   tmp_path: Path) -> None:
    driver = FakeDriver(load_config(tmp_path, environ={}))
    builder = proxy_image.ProxyImageBuilder()
    builder.build(driver, request(tmp_path), lambda chunk: None)
    host.steps.clear()
    output: list[bytes] = []
    builder.build(driver, request(tmp_path, "other"), output.append)
    assert host.steps == [] and b"==> using the cached" in b"".join(output)
    digest = builder.recipe(request(tmp_path)).digest()
    assert builder.recipe(BuildRequest("x", "forky", options=request(tmp_path).options)).digest() != digest
    assert builder.recipe(BuildRequest("x", "trixie", options={"mirror": "http://m2.test/d"})).digest() != digest


def test_a_failed_step_leaves_no_image_and_no_tarball(host: FakeHost, tmp_path: Path) -> None:
    driver = FakeDriver(load_config(tmp_path, environ={}))
    host.fail_at = "systemctl enable"
    with pytest.raises(CciError, match="systemctl enable failed"):
        proxy_image.ProxyImageBuilder().build(driver, request(tmp_path), lambda chunk: None)
    assert driver.images == {} and list((tmp_path / "cache").iterdir()) == []


def test_ensure_builds_only_a_missing_image_in_one_line(host: FakeHost, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_build, "host_mirror", lambda: "http://mirror.test/debian")
    driver = FakeDriver(load_config(tmp_path, environ={}))
    said: list[str] = []
    proxy_image.ensure_proxy_image(driver, "my-proxy", said.append)
    assert said == ["building the proxy image my-proxy (once, about 90 s)"]
    assert driver.image_exists("my-proxy") and host.steps[0] == "debootstrap"
    logs = list((tmp_path / "home/.cci/logs").iterdir())
    assert len(logs) == 1 and b"debootstrap" in logs[0].read_bytes()
    host.steps.clear()
    proxy_image.ensure_proxy_image(driver, "my-proxy", said.append)
    assert len(said) == 1 and host.steps == []


def test_ensure_names_the_log_when_the_build_fails(host: FakeHost, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_build, "host_mirror", lambda: "http://mirror.test/debian")
    host.fail_at = "debootstrap"
    with pytest.raises(CciError, match="building the proxy image cci-proxy failed: debootstrap failed") as error:
        proxy_image.ensure_proxy_image(FakeDriver(load_config(tmp_path, environ={})), "cci-proxy", lambda line: None)
    (log,) = (tmp_path / "home/.cci/logs").iterdir()
    assert error.value.hint == f"the log is {log}"


def test_ensure_without_root_says_how_to_build_it(host: FakeHost, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_image.os, "geteuid", lambda: 1000)
    driver = FakeDriver(load_config(tmp_path, environ={}))
    with pytest.raises(UsageError, match="the proxy image my-proxy is missing, and building it needs root") as error:
        proxy_image.ensure_proxy_image(driver, "my-proxy", lambda line: None)
    assert error.value.hint == "build it once: 'sudo cci build proxy --alias my-proxy'"
    assert host.steps == [] and driver.images == {}


def test_cci_build_proxy_is_a_command() -> None:
    from cci_builtin_plugins.images.commands import build

    result = CliRunner().invoke(build, ["proxy", "--help"])
    assert result.exit_code == 0 and "--if-changed" in result.output and "cci-proxy" in result.output
