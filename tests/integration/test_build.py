"""``cci build custom`` on the real Incus, offline: a script on the test base, published and aliased; and
``cci build --source host`` against the real default image scripts/incus-test-env builds (its cached recipe).

Every image made here carries this test's random alias and is deleted afterwards; the shared default image
only gets an extra alias, which is removed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pytest

from cci_core.driver import ImageInfo
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import LABEL_PREFIX, aliased, assert_error, run_cci

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus


@pytest.fixture
def alias(driver: IncusDriver) -> Iterator[str]:
    """A fresh image alias; every image carrying it (or its versioned form) is deleted afterwards."""
    name = f"bt{uuid4().hex[:8]}"
    yield name
    for image in driver.list_images():
        if any(alias == name or alias.startswith(f"{name}-") for alias in image.aliases):
            driver.delete_image(image.fingerprint)


def build_containers(incus: pylxd.Client) -> list[str]:
    return [instance.name for instance in incus.instances.all(recursion=1)
            if instance.config.get(LABEL_PREFIX + "kind") == "build"]


def build(alias: str, script: Path, env: dict[str, str], *extra: str):  # type: ignore[no-untyped-def]
    return run_cci("build", "custom", alias, "--script", str(script), "--base", incus_env.IMAGE, "--offline",
                   *extra, env=env, timeout=300)


def test_custom_build_publishes_a_versioned_image_and_moves_the_alias(
    alias: str, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "build.sh"
    script.write_text("set -e\necho step-one\necho built-by-script > /etc/cci-built\n")
    before = set(build_containers(incus))
    result = build(alias, script, cci_environ)
    assert result.returncode == 0, result.stderr
    assert "step-one" in result.stdout  # the script's output streams through
    versioned = re.search(rf"publishing ({alias}-\d{{8}}-\d{{6}})", result.stdout).group(1)  # type: ignore[union-attr]
    log = Path(result.stderr.strip().rsplit("log: ", 1)[1])
    assert "step-one" in log.read_text()
    [(fingerprint, aliases)] = [(found, names) for found, names in aliased(incus, alias).items() if alias in names]
    assert versioned in aliases
    assert set(build_containers(incus)) == before  # the build container is gone

    launched = run_cci("run", "--image", alias, "--", "cat", "/etc/cci-built", env=cci_environ, cwd=tmp_path)
    assert (launched.returncode, launched.stdout) == (0, "built-by-script\n"), launched.stderr

    assert_error(build(alias, script, cci_environ), 2, f"image '{alias}' exists already", "--force")
    rebuilt = build(alias, script, cci_environ, "--force")
    assert rebuilt.returncode == 0, rebuilt.stderr
    images = aliased(incus, alias)
    assert len(images) == 2  # the first build keeps its versioned alias; the alias moved to the new one
    assert images[fingerprint] == (versioned,)


def test_a_failing_script_leaves_no_image_and_no_container(
    alias: str, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "build.sh"
    script.write_text("echo about-to-fail\nexit 7\n")
    before = set(build_containers(incus))
    result = build(alias, script, cci_environ)
    assert result.returncode == 1
    assert "about-to-fail" in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"cci: building {alias} failed: the build script failed with exit code 7 (the log is ")
    assert "about-to-fail" in Path(line.rsplit("the log is ", 1)[1].rstrip(")")).read_text()
    assert aliased(incus, alias) == {}
    assert set(build_containers(incus)) == before


def test_bad_build_input_is_one_line(alias: str, cci_environ: dict[str, str], tmp_path: Path) -> None:
    assert_error(build(alias, tmp_path / "missing.sh", cci_environ), 2, "cannot read the build script")
    script = tmp_path / "ok.sh"
    script.write_text("true\n")
    assert_error(build("bad/name", script, cci_environ), 2, "'bad/name' is not a valid image name")
    assert_error(run_cci("build", "custom", alias, "--script", str(script), "--base", "no-such-base", "--offline",
                         env=cci_environ), 5, "base image 'no-such-base' not found")


# -- the host path ('cci build --source host'), against the real default image scripts/incus-test-env builds ----

def _claude_image(driver: IncusDriver) -> ImageInfo:
    images = [image for image in driver.list_images() if incus_env.CLAUDE_IMAGE in image.aliases]
    assert images, f"no image {incus_env.CLAUDE_IMAGE}: scripts/incus-test-env builds it"
    return images[0]


def _images_config(home: str, **settings: str) -> None:
    config = Path(home, ".config/cci/config.toml")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[plugins.images]\n" + "".join(f'{key} = "{value}"\n' for key, value in settings.items()))


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:  # nobody listens on it afterwards: no request leaves the machine
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def extra_alias(driver: IncusDriver) -> Iterator[str]:
    """A fresh alias put on the shared default image: afterwards only the aliases are removed, never the image."""
    import subprocess

    name = f"bt{uuid4().hex[:8]}"
    yield name
    for image in driver.list_images():
        for alias in image.aliases:
            if alias == name or alias.startswith(f"{name}-"):
                subprocess.run(["incus", "image", "alias", "delete", alias, "--project", "default"], check=True,
                               capture_output=True)


def test_the_host_build_of_the_same_recipe_imports_the_cached_image_with_its_claude_version(
    extra_alias: str, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path
) -> None:
    from cci_builtin_plugins.images.host_build import HostImageBuilder, host_mirror
    from cci_builtin_plugins.tools.claude import ClaudeCode
    from cci_core.image_builder import BuildRequest
    from cci_core.tool import ImageFetch

    built = _claude_image(driver)
    version = built.properties["cci.tool.claude.version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), built.properties
    assert built.properties["cci.builder"] == "host"
    # the exact version: nothing is asked of the registry (a closed port here); the recipe is the script's
    _images_config(cci_environ["HOME"], claude_version=version, npm_registry=f"http://127.0.0.1:{_closed_port()}")
    recipe = HostImageBuilder(ClaudeCode(), ImageFetch(version)).recipe(
        BuildRequest(extra_alias, "trixie", options={"mirror": host_mirror()}))
    assert recipe.digest() == built.properties["cci.recipe"], "scripts/incus-test-env built another recipe"

    command = ("build", "--source", "host", "--alias", extra_alias, "--cache", str(incus_env.CACHE_DIR))
    result = run_cci(*command, env=cci_environ, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "==> using the cached" in result.stdout and "debootstrap" not in result.stdout
    [(fingerprint, aliases)] = [(found, names) for found, names in aliased(incus, extra_alias).items()
                                if extra_alias in names]
    assert fingerprint == built.fingerprint  # the same tarball: the same image, under one more alias
    assert any(re.fullmatch(rf"{extra_alias}-\d{{8}}-\d{{6}}", alias) for alias in aliases)

    again = run_cci(*command, "--if-changed", env=cci_environ)
    assert again.returncode == 0 and f"{extra_alias} is up to date" in again.stderr, again.stderr

    listed = run_cci("image", "list", "--prefix", extra_alias, "--format", "json", env=cci_environ)
    assert [entry["tools"] for entry in json.loads(listed.stdout)] == [{"claude": version}]
    table = run_cci("image", "list", "--prefix", extra_alias, env=cci_environ).stdout.splitlines()
    assert table[0].split()[3] == "TOOL" and f"  claude {version}  " in table[1]

    ran = run_cci("run", "--image", extra_alias, "--", "claude", "--version", env=cci_environ, cwd=tmp_path,
                  timeout=300)
    assert (ran.returncode, ran.stdout) == (0, f"{version} (Claude Code)\n"), ran.stderr


def test_an_unreachable_npm_registry_fails_the_host_build_in_one_line_and_makes_nothing(
    alias: str, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path
) -> None:
    port = _closed_port()
    _images_config(cci_environ["HOME"], npm_registry=f"http://127.0.0.1:{port}")
    cache = tmp_path / "cache"
    result = run_cci("build", "--source", "host", "--alias", alias, "--cache", str(cache), env=cci_environ)
    assert_error(result, 4, f"the npm registry 127.0.0.1:{port} is unreachable", "npm_registry")
    assert aliased(incus, alias) == {}
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_host_build_failing_in_debootstrap_leaves_no_image_no_tree_and_no_mount(
    alias: str, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path
) -> None:
    from tests.fake_npm_registry import FakeRegistry

    registry = FakeRegistry()  # Claude Code from a fake registry on loopback; the mirror is a closed port
    registry.publish()
    try:
        _images_config(cci_environ["HOME"], npm_registry=registry.url)
        cache = tmp_path / "cache"
        result = run_cci("build", "--source", "host", "--alias", alias, "--cache", str(cache), "--mirror",
                         f"http://127.0.0.1:{_closed_port()}/debian", env=cci_environ, timeout=300)
    finally:
        registry.close()
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "==> downloading Claude Code 9.9.9" in result.stdout and "==> debootstrap trixie" in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"cci: building {alias} failed: debootstrap failed with exit code ")
    assert aliased(incus, alias) == {}
    assert list(cache.iterdir()) == []  # no tree, no tarball
    assert str(cache) not in Path("/proc/self/mountinfo").read_text()


def _processes_naming(text: str) -> list[str]:
    """Command lines of the processes whose arguments contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and text in argv:
            found.append(argv)
    return found


def _wait_for(predicate, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_host_build_killed_during_debootstrap_stops_it_and_leaves_no_tree(
    signum: str, alias: str, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path
) -> None:
    import signal
    import socket
    import subprocess

    from tests.fake_npm_registry import FakeRegistry
    from tests.integration.conftest import CCI

    registry = FakeRegistry()
    registry.publish()
    mirror = socket.socket()  # accepts connections (the kernel's backlog) and never answers: debootstrap hangs
    mirror.bind(("127.0.0.1", 0))
    mirror.listen(16)
    cache = tmp_path / "cache"
    try:
        _images_config(cci_environ["HOME"], npm_registry=registry.url)
        process = subprocess.Popen(
            [str(CCI), "build", "--source", "host", "--alias", alias, "--cache", str(cache), "--mirror",
             f"http://127.0.0.1:{mirror.getsockname()[1]}/debian"],
            env=cci_environ, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: any("debootstrap" in argv for argv in _processes_naming(str(cache))), 60,
                      "debootstrap to start")
            process.send_signal(getattr(signal, signum))  # to cci only, as 'kill' does
            stdout, stderr = process.communicate(timeout=60)
            left = _processes_naming(str(cache))  # while the mirror still hangs: cci stopped debootstrap itself
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finally:
        mirror.close()
        registry.close()
    assert process.returncode != 0 and "Traceback" not in stderr, (stdout, stderr)
    assert left == []
    assert list(cache.iterdir()) == []  # no tree, no tarball
    assert str(cache) not in Path("/proc/self/mountinfo").read_text()
    assert aliased(incus, alias) == {}



def _zeros_tarball(path: Path, size: int, description: str) -> str:
    """A unified image tarball: metadata.yaml (with ``description``: a fingerprint of its own) and ``size`` zero
    bytes in the rootfs; returns its SHA-256."""
    import hashlib
    import io
    import tarfile

    class Zeros(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            buffer[:] = bytes(len(buffer))
            return len(buffer)

    def member(name: str, length: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.type, info.mode = length, kind, 0o755 if kind == tarfile.DIRTYPE else 0o644
        return info

    metadata = f"architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  description: {description}\n".encode()
    with tarfile.open(path, "w") as tar:
        tar.addfile(member("metadata.yaml", len(metadata)), io.BytesIO(metadata))
        tar.addfile(member("rootfs", 0, tarfile.DIRTYPE))
        tar.addfile(member("rootfs/zeros", size), io.BufferedReader(Zeros(), 1 << 20))
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _running_operations(incus: pylxd.Client) -> list[dict[str, Any]]:
    return list((incus.api.operations.get(params={"recursion": 1}).json()["metadata"] or {}).get("running") or ())


def _new_imports(incus: pylxd.Client, before: set[str]) -> list[str]:
    """Image imports Incus runs (an upload received, being stored) that are not in ``before``: their ids."""
    return [op["id"] for op in _running_operations(incus)
            if op["id"] not in before and op["description"] == "Downloading image"]


def test_a_host_build_interrupted_while_incus_imports_the_tarball_leaves_no_image(
    alias: str, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path
) -> None:
    import contextlib
    import signal
    import subprocess

    from pylxd.exceptions import NotFound

    from cci_builtin_plugins.images.host_build import HostImageBuilder, host_mirror
    from cci_builtin_plugins.tools.claude import ClaudeCode
    from cci_core.image_builder import BuildRequest
    from cci_core.tool import ImageFetch
    from tests.integration.conftest import CCI

    # a cached tarball of the recipe (an exact Claude version: the registry, a closed port, is never asked);
    # uncompressed (Incus looks at the content, not the name), big enough that Incus takes a moment to store it
    _images_config(cci_environ["HOME"], claude_version="9.9.9", npm_registry=f"http://127.0.0.1:{_closed_port()}")
    recipe = HostImageBuilder(ClaudeCode(), ImageFetch("9.9.9")).recipe(
        BuildRequest(alias, "trixie", options={"mirror": host_mirror()}))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    fingerprint = _zeros_tarball(cache / f"cci-{recipe.digest()}.tar.gz", 1 << 30, alias)
    before = {op["id"] for op in _running_operations(incus)}
    process = subprocess.Popen([str(CCI), "build", "--source", "host", "--alias", alias, "--cache", str(cache)],
                               env=cci_environ, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    imports: list[str] = []
    try:
        _wait_for(lambda: imports.extend(_new_imports(incus, before)) or imports or process.poll() is not None,
                  120, "Incus to import it")
        process.send_signal(signal.SIGINT)  # the upload is done; Incus stores the image
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "==> importing it as" in stdout and process.returncode != 0, (stdout, stderr)
    for operation in imports:  # Incus goes on without cci: what it leaves is there once it is done
        with contextlib.suppress(NotFound):  # done, and forgotten by Incus already
            incus.api.operations[operation].wait.get(params={"timeout": 120})
    assert "Traceback" not in stderr
    left = incus.images.exists(fingerprint)
    if left:  # (its content is this test's own: no one else's image)
        driver.delete_image(fingerprint)
    assert not left, "the interrupted import left its image"
    assert aliased(incus, alias) == {}
