"""Claude Code from the npm registry, fetched on the host (no Node.js or npm needed there).

``@anthropic-ai/claude-code`` holds no program of its own: its per-platform
packages ``@anthropic-ai/claude-code-linux-<x64|arm64>`` (same version) hold
``package/claude``, a native executable. This module resolves the version
(``latest`` is the main package's ``dist-tags.latest``), downloads the platform
tarball while checking its ``dist.integrity`` (sha512), extracts only that one
regular file (size-bounded), and keeps it per version in the user's cache
directory, so a rebuild of the same version downloads nothing (a cached file
others could have written is not used).
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

from cci_core.api import BackendError, CciError, NotFoundError, only_mine

PACKAGE = "@anthropic-ai/claude-code"
DEFAULT_REGISTRY = "https://registry.npmjs.org"
#: the file the platform package holds, and where it goes in the image
BINARY_MEMBER = "package/claude"
IMAGE_PATH = "/usr/local/bin/claude"
#: bounds on what is downloaded and extracted (the 2.1 binary is 402 MB, its tarball 186 MB)
MAX_TARBALL = 1 << 30
MAX_BINARY = 2 << 30
MAX_METADATA = 16 << 20
TIMEOUT = 30
#: npm's name for the host's architecture
ARCHITECTURES = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$")
_EXACT = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]{1,40})?$")
_SETTINGS_HINT = "set [plugins.images] npm_registry (or the environment variable npm_config_registry)"


class RegistryUnreachableError(BackendError):
    """The npm registry did not answer (network, proxy, DNS) or answered with an error."""


class ToolVersionNotFoundError(NotFoundError):
    """The registry has no such version (or dist-tag) of the package."""


class NoBinaryError(CciError):
    """There is no Claude Code binary package for this machine's architecture."""


class IntegrityError(CciError):
    """A downloaded tarball does not match the registry's ``dist.integrity``."""


class BadPackageError(CciError):
    """The package's metadata or tarball is not what Claude Code publishes."""


def registry_url(configured: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The registry: the setting, else ``npm_config_registry`` from the environment, else the public one."""
    environ = os.environ if environ is None else environ
    url = configured or environ.get("npm_config_registry") or environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_REGISTRY
    if urlsplit(url).scheme not in ("http", "https"):
        raise CciError(f"the npm registry {url!r} is not an http(s) URL", hint=_SETTINGS_HINT)
    return url.rstrip("/")


def npm_architecture(machine: str | None = None) -> str:
    """npm's name for the architecture (``x64``, ``arm64``); raises :class:`NoBinaryError` for any other."""
    machine = machine or platform.machine()
    try:
        return ARCHITECTURES[machine.lower()]
    except KeyError:
        raise NoBinaryError(f"Claude Code has no Linux binary for the architecture {machine}",
                            hint="build on an x86_64 or arm64 machine") from None


def platform_package(architecture: str) -> str:
    return f"{PACKAGE}-linux-{architecture}"


def resolve_version(registry: str, wanted: str = "latest") -> str:
    """The exact version ``wanted`` names: an exact version as it is (no request), a dist-tag such as
    ``latest`` as the registry says."""
    if _EXACT.match(wanted):
        return wanted
    return _check_version(str(_manifest(registry, PACKAGE, wanted).get("version", "")), registry)


def fetch_binary(registry: str, version: str, cache_dir: Path, say: Callable[[str], None],
                 architecture: str | None = None) -> Path:
    """The verified ``claude`` executable of ``version`` for ``architecture``, from the cache or the registry."""
    import tempfile

    architecture = architecture or npm_architecture()
    version = _check_version(version, registry)
    cached = cache_dir / f"claude-{version}-linux-{architecture}"
    if only_mine(cached):
        say(f"Claude Code {version} ({architecture}) from the cache {cached}")
        return cached
    manifest = _manifest(registry, PACKAGE, version)
    if platform_package(architecture) not in (manifest.get("optionalDependencies") or {}):
        raise NoBinaryError(f"Claude Code {version} has no binary package for linux-{architecture} "
                            f"({platform_package(architecture)} is not among its platform packages)",
                            hint="pick another version with [plugins.images] claude_version")
    try:
        dist = _manifest(registry, platform_package(architecture), version).get("dist") or {}
    except ToolVersionNotFoundError:
        raise NoBinaryError(f"the npm registry has no {platform_package(architecture)}@{version}: no Claude Code "
                            f"binary for linux-{architecture}",
                            hint="pick another version with [plugins.images] claude_version") from None
    tarball_url, integrity = dist.get("tarball"), dist.get("integrity")
    if not isinstance(tarball_url, str) or urlsplit(tarball_url).scheme not in ("http", "https") \
            or not isinstance(integrity, str):
        raise BadPackageError(f"the registry's metadata of {platform_package(architecture)}@{version} has no "
                              "usable dist.tarball and dist.integrity", hint=_SETTINGS_HINT)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        scratch = tempfile.TemporaryDirectory(prefix="claude-", dir=cache_dir)
    except OSError as exc:
        raise CciError(f"cannot write Claude Code's cache directory {cache_dir}: {exc.strerror}",
                       hint="fix its owner or delete it (a build run as root with your HOME may have made it root's)"
                       ) from None
    with scratch as work:
        tarball = Path(work, "package.tgz")
        say(f"downloading Claude Code {version} ({platform_package(architecture)}) from {registry}")
        with tarball.open("wb") as sink:
            _download(tarball_url, integrity, sink)
        binary = Path(work, "claude")
        _extract_binary(tarball, binary, f"{platform_package(architecture)}@{version}")
        binary.chmod(0o755)
        os.replace(binary, cached)
    return cached


def _check_version(version: str, registry: str) -> str:
    if not _VERSION.match(version):
        raise BadPackageError(f"the registry {registry} named the version {version!r}, which is not a version",
                              hint=_SETTINGS_HINT)
    return version


def _open(url: str, what: str) -> Any:
    """The response for ``url``; a missing document is :class:`ToolVersionNotFoundError`, the rest unreachable."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)  # noqa: S310 (http(s) checked by the callers)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ToolVersionNotFoundError(f"the npm registry has no {what} ({url} answered 404)",
                                           hint="set [plugins.images] claude_version to 'latest' or a published "
                                                "version such as 2.1.332") from None
        raise RegistryUnreachableError(f"the npm registry answered HTTP {exc.code} for {url}",
                                       hint=_SETTINGS_HINT) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryUnreachableError(f"the npm registry {urlsplit(url).netloc} is unreachable: {reason}",
                                       hint=f"check the network or proxy, or {_SETTINGS_HINT}") from None


def _manifest(registry: str, package: str, version: str) -> dict[str, Any]:
    """One version's manifest: ``<registry>/<package>/<version or dist-tag>``."""
    if not _VERSION.match(version):
        raise ToolVersionNotFoundError(f"{version!r} is not a version or dist-tag of {package}",
                                       hint="set [plugins.images] claude_version to 'latest' or a version")
    url = f"{registry}/{quote(package, safe='@')}/{quote(version)}"
    with _open(url, f"{package}@{version}") as response:
        body = response.read(MAX_METADATA + 1)
    try:
        document = json.loads(body) if len(body) <= MAX_METADATA else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise BadPackageError(f"the npm registry's answer for {package}@{version} is not package metadata",
                              hint=_SETTINGS_HINT)
    return document


def _download(url: str, integrity: str, sink: IO[bytes]) -> None:
    """Stream ``url`` into ``sink``, checking the size bound and the sha512 ``integrity`` (npm's SRI format)."""
    import base64
    import hashlib

    expected = [entry[len("sha512-"):] for entry in integrity.split() if entry.startswith("sha512-")]
    if not expected:
        raise BadPackageError(f"the registry gives no sha512 integrity for {url} (only {integrity[:40]!r})",
                              hint=_SETTINGS_HINT)
    digest = hashlib.sha512()
    size = 0
    with _open(url, f"tarball {url}") as response:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            size += len(chunk)
            if size > MAX_TARBALL:
                raise BadPackageError(f"{url} is larger than {MAX_TARBALL >> 20} MiB: refused")
            digest.update(chunk)
            sink.write(chunk)
    actual = base64.b64encode(digest.digest()).decode()
    if actual not in expected:
        raise IntegrityError(f"the download of {url} does not match the registry's integrity "
                             f"(sha512-{actual[:16]}..., expected sha512-{expected[0][:16]}...)",
                             hint="retry; if it persists, the registry or a proxy serves a corrupted tarball")


def _extract_binary(tarball: Path, destination: Path, what: str) -> None:
    """Copy ``package/claude`` (a regular file within the size bound) out of the tarball; nothing else."""
    import shutil
    import tarfile

    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                if member.name not in (BINARY_MEMBER, f"./{BINARY_MEMBER}"):
                    continue
                if not member.isreg():
                    raise BadPackageError(f"{what}: {BINARY_MEMBER} is not a regular file")
                if member.size > MAX_BINARY:
                    raise BadPackageError(f"{what}: {BINARY_MEMBER} is larger than {MAX_BINARY >> 20} MiB")
                source = archive.extractfile(member)
                assert source is not None
                with source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                return
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadPackageError(f"{what}: the tarball cannot be read ({exc})") from None
    raise BadPackageError(f"{what}: the tarball has no {BINARY_MEMBER}",
                          hint="pick another version with [plugins.images] claude_version")
