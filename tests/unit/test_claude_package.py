"""Claude Code fetched on the host from an npm registry: a fake registry on 127.0.0.1 serves metadata and tarballs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cci_builtin_plugins.tools import claude_package as package
from cci_builtin_plugins.tools.claude import ClaudeCode
from cci_builtin_plugins.tools.codex import Codex
from cci_core.errors import BackendError, CciError, NotFoundError
from cci_core.tool import ImageFetch, tool_version_property
from tests.fake_npm_registry import BINARY, VERSION, FakeRegistry, integrity, tarball
from tests.planted import PLANTS, plant

@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry()
    yield fake
    fake.close()


def fetch(registry: FakeRegistry, cache: Path, version: str = VERSION, architecture: str = "x64") -> Path:
    return package.fetch_binary(registry.url, version, cache, lambda line: None, architecture)


def test_latest_resolves_to_the_dist_tag_and_the_binary_is_extracted_verified_and_cached(
        registry: FakeRegistry, tmp_path: Path) -> None:
    registry.publish()
    assert package.resolve_version(registry.url, "latest") == VERSION
    binary = fetch(registry, tmp_path)
    assert binary.read_bytes() == BINARY and binary.stat().st_mode & 0o777 == 0o755
    assert [path.name for path in tmp_path.iterdir()] == [binary.name]  # no temporary files left
    registry.routes.clear()  # the same version again: from the cache, no request
    before = len(registry.requests)
    assert fetch(registry, tmp_path) == binary and len(registry.requests) == before


def test_the_claude_adapter_fetches_into_the_user_cache_and_codex_adds_nothing(
        registry: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.publish()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(package, "npm_architecture", lambda machine=None: "x64")
    claude = ClaudeCode()
    settings = ImageFetch("latest", registry.url)
    assert claude.image_version(settings) == VERSION
    [file] = claude.image_files(VERSION, settings, lambda line: None)
    assert file.path == "/usr/local/bin/claude" and file.mode == 0o755 and file.source.read_bytes() == BINARY
    assert file.source.is_relative_to(tmp_path)
    assert Codex().image_version(settings) is None and Codex().image_files("1", settings, print) == ()
    assert tool_version_property("claude") == "cci.tool.claude.version"


def test_an_unreachable_registry_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(package.RegistryUnreachableError) as caught:
        package.resolve_version(f"http://127.0.0.1:{port}", "latest")
    assert isinstance(caught.value, BackendError) and caught.value.exit_code == 4
    assert f"the npm registry 127.0.0.1:{port} is unreachable" in str(caught.value)
    assert "npm_registry" in str(caught.value)


def test_a_registry_error_status_is_unreachable_too(registry: FakeRegistry) -> None:
    registry.routes["/@anthropic-ai%2Fclaude-code/latest"] = (503, b"down")
    with pytest.raises(package.RegistryUnreachableError, match="answered HTTP 503"):
        package.resolve_version(registry.url, "latest")


def test_an_unknown_version_is_not_found(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.publish()
    with pytest.raises(package.ToolVersionNotFoundError) as caught:
        package.resolve_version(registry.url, "next")  # a dist-tag the package does not have
    assert isinstance(caught.value, NotFoundError) and "@anthropic-ai/claude-code@next" in str(caught.value)
    assert "claude_version" in str(caught.value)
    with pytest.raises(package.ToolVersionNotFoundError, match="@anthropic-ai/claude-code@1.2.3"):
        fetch(registry, tmp_path, "1.2.3")
    with pytest.raises(package.ToolVersionNotFoundError, match="not a version"):
        package.resolve_version(registry.url, "../../etc")
    assert list(tmp_path.iterdir()) == []


def test_an_exact_version_needs_no_request(registry: FakeRegistry) -> None:
    assert package.resolve_version(registry.url, "2.1.332") == "2.1.332"
    assert registry.requests == []


def test_no_binary_package_for_this_architecture(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.publish(architectures=("x64",))
    with pytest.raises(package.NoBinaryError, match="no binary package for linux-arm64"):
        fetch(registry, tmp_path, architecture="arm64")
    with pytest.raises(package.NoBinaryError, match="no Linux binary for the architecture riscv64"):
        package.npm_architecture("riscv64")
    assert package.npm_architecture("x86_64") == "x64" and package.npm_architecture("aarch64") == "arm64"
    # listed by the main package, but the platform package is missing from the registry
    del registry.routes[f"/@anthropic-ai%2Fclaude-code-linux-x64/{VERSION}"]
    with pytest.raises(package.NoBinaryError, match="no Claude Code binary for linux-x64"):
        fetch(registry, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_integrity_mismatch_keeps_nothing(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.publish(claimed=integrity(b"something else"))
    with pytest.raises(package.IntegrityError, match="does not match the registry's integrity"):
        fetch(registry, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_tarball_without_package_claude_is_refused(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.publish(tgz=tarball({"package/package.json": b"{}", "package/cli.js": b"//"}))
    with pytest.raises(package.BadPackageError, match="the tarball has no package/claude"):
        fetch(registry, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_package_claude_that_is_a_link_is_refused(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.publish(tgz=tarball({"package/claude": None}))
    with pytest.raises(package.BadPackageError, match="package/claude is not a regular file"):
        fetch(registry, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_oversized_binary_is_refused(registry: FakeRegistry, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    registry.publish()
    monkeypatch.setattr(package, "MAX_BINARY", len(BINARY) - 1)
    with pytest.raises(package.BadPackageError, match="package/claude is larger than"):
        fetch(registry, tmp_path)


def test_the_registry_url_setting_then_the_environment_then_the_default() -> None:
    environ = {"npm_config_registry": "http://env.example/npm/"}
    assert package.registry_url("https://set.example/", environ) == "https://set.example"
    assert package.registry_url(None, environ) == "http://env.example/npm"
    assert package.registry_url(None, {}) == "https://registry.npmjs.org"
    with pytest.raises(CciError, match="is not an http"):
        package.registry_url("file:///etc", {})


@pytest.mark.parametrize("how", PLANTS)
def test_a_cached_binary_others_could_have_planted_is_fetched_again(
        registry: FakeRegistry, tmp_path: Path, how: str) -> None:
    registry.publish()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    plant(cache / f"claude-{VERSION}-linux-x64", how)
    binary = fetch(registry, cache)
    assert binary.read_bytes() == BINARY and not binary.is_symlink()
    assert any("claude-code-linux-x64" in request for request in registry.requests)


def test_a_cache_directory_that_cannot_be_written_is_one_clear_error(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.publish()
    (tmp_path / "file").write_text("")
    cache = tmp_path / "file" / "claude-code"  # as unusable as a directory root left behind (sudo -E)
    with pytest.raises(CciError) as caught:
        fetch(registry, cache)
    assert str(cache) in caught.value.message and "fix its owner or delete it" in (caught.value.hint or "")
