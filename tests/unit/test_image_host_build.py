"""The host path of 'cci build' without root or a daemon: host commands faked, the steps and their clean-up checked."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cci_builtin_plugins.images import contents, host_build, source
from cci_core.config import load_config
from cci_core.errors import CciError, UsageError
from cci_core.image_builder import BuildRequest
from cci_core.tool import ImageFetch, ImageFile, ToolAdapter
from tests.fakes import FakeDriver
from tests.planted import PLANTS, plant

TREE_CA = b"the tree's own bundle\n"
HOST_CA = b"the host's bundle, with the proxy's CA\n"


class FakeTool(ToolAdapter):
    name = "faketool"
    summary = "a tool whose binary is a host file"
    default_binary = "faketool"
    state_dir = ".faketool"

    def __init__(self, binary: Path) -> None:
        super().__init__()
        self.file = binary
        self.fetched: list[str] = []

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        return [self.binary]

    def image_version(self, fetch: ImageFetch) -> str:
        return "1.2.3" if fetch.version == "latest" else fetch.version

    def image_files(self, version: str, fetch: ImageFetch, say: Callable[[str], None]) -> tuple[ImageFile, ...]:
        self.fetched.append(version)
        return (ImageFile("/usr/local/bin/faketool", self.file, 0o755),)


class FakeHost:
    """Stands in for debootstrap, chroot and tar: records the steps, makes a tree and a tarball."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.steps: list[str] = []
        self.fail_at = fail_at
        self.ca_during_apt: bytes | None = None
        self.packed: dict[str, bytes] = {}

    def run(self, argv: Sequence[str], output: Callable[[bytes], None], what: str,
            env: Mapping[str, str] | None = None) -> None:
        self.steps.append(what)
        if what == self.fail_at:
            raise CciError(f"{what} failed with exit code 1")
        if what == "debootstrap":
            rootfs = Path(argv[-2])
            for directory in ("etc/ssl/certs", "etc/sudoers.d", "etc/network", "usr/sbin", "usr/local/bin",
                              "var/lib/dbus", "var/lib/apt/lists"):
                (rootfs / directory).mkdir(parents=True)
            (rootfs / host_build.IMAGE_CA_BUNDLE).write_bytes(TREE_CA)
        elif what == "apt-get install":
            rootfs = Path(argv[argv.index("chroot") + 1])
            self.ca_during_apt = (rootfs / host_build.IMAGE_CA_BUNDLE).read_bytes()
        elif what == "tar":
            work = Path(argv[argv.index("-C") + 1])
            rootfs = work / "rootfs"
            self.packed = {str(path.relative_to(work)): path.read_bytes()
                           for path in work.rglob("*") if path.is_file() and not path.name.startswith("image.")}
            tarball = Path(next(arg for arg in argv if ".tar." in arg))
            tarball.write_bytes(b"tarball of " + self.packed["metadata.yaml"] + bytes(rootfs.exists()))


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHost]:
    from cci_builtin_plugins.images import debootstrap

    fake = FakeHost()
    monkeypatch.setattr(host_build, "run_host_command", fake.run)
    monkeypatch.setattr(debootstrap, "run_host_command", fake.run)
    monkeypatch.setattr(host_build, "_succeeds", lambda argv: True)
    monkeypatch.setattr(host_build.os, "geteuid", lambda: 0)
    monkeypatch.setattr(host_build.os, "chown", lambda *args: None)
    monkeypatch.setattr(host_build.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(host_build, "HOST_CA_BUNDLE", tmp_path / "host-ca.crt")
    (tmp_path / "host-ca.crt").write_bytes(HOST_CA)
    yield fake


def make(tmp_path: Path, ca_bundle: str = "none") -> tuple[host_build.HostImageBuilder, FakeDriver, BuildRequest]:
    binary = tmp_path / "faketool-binary"
    binary.write_bytes(b"fake binary")
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    builder = host_build.HostImageBuilder(FakeTool(binary), ImageFetch(), ca_bundle)
    request = BuildRequest("demo", "trixie", offline=True,
                           options={"mirror": "http://mirror.test/debian", "cache": str(cache)})
    return builder, FakeDriver(load_config(tmp_path, environ={})), request


def test_a_build_installs_the_list_records_the_tool_and_keeps_the_tarball_by_recipe(
        host: FakeHost, tmp_path: Path) -> None:
    builder, driver, request = make(tmp_path)
    output: list[bytes] = []
    image = builder.build(driver, request, output.append)
    assert host.steps[:4] == ["debootstrap", "apt-get update", "apt-get install", "useradd"]
    assert {"usermod", "systemctl enable", "systemctl mask", "tar"} <= set(host.steps)
    metadata = host.packed["metadata.yaml"].decode()
    recipe = builder.recipe(request)
    assert "  cci.tool.faketool.version: '1.2.3'" in metadata and "  cci.builder: host" in metadata
    assert f"  cci.recipe: '{recipe.digest()}'" in metadata and "release: trixie" in metadata
    assert host.packed["rootfs/usr/local/bin/faketool"] == b"fake binary"
    assert host.packed[f"rootfs{contents.SUDOERS_FILE}"] == (contents.SUDOERS_LINE + "\n").encode()
    assert f"rootfs/{host_build.POLICY_RC_D}" not in host.packed  # daemons may start again in the image
    assert host.packed[f"rootfs/{host_build.IMAGE_CA_BUNDLE}"] == TREE_CA  # host_ca_bundle = none
    assert "demo" in image.aliases and any(alias.startswith("demo-") for alias in image.aliases)
    cache = Path(request.options["cache"])
    assert [path.name for path in cache.iterdir()] == [f"cci-{recipe.digest()}.tar.zst"]

    host.steps.clear()  # the same recipe again: the cached tarball is imported, nothing is built or fetched
    builder.build(driver, request, output.append)
    assert host.steps == [] and builder.tool.fetched == ["1.2.3"]  # type: ignore[union-attr]
    assert b"==> using the cached" in b"".join(output)


def test_the_recipe_changes_with_what_decides_the_image(host: FakeHost, tmp_path: Path) -> None:
    builder, _driver, request = make(tmp_path)
    digest = builder.recipe(request).digest()
    assert builder.recipe(request).digest() == digest
    other_version = host_build.HostImageBuilder(builder.tool, ImageFetch("2.0.0"))
    other_suite = BuildRequest("demo", "bookworm", options=request.options)
    other_mirror = BuildRequest("demo", "trixie", options={"mirror": "http://other.test/debian"})
    kept_ca = host_build.HostImageBuilder(builder.tool, ImageFetch(), "image")
    assert len({digest, other_version.recipe(request).digest(), builder.recipe(other_suite).digest(),
                builder.recipe(other_mirror).digest(), kept_ca.recipe(request).digest()}) == 5
    assert BuildRequest("other-alias", "trixie", options=request.options) and \
        builder.recipe(BuildRequest("other-alias", "trixie", options=request.options)).digest() == digest


@pytest.mark.parametrize("step", ["debootstrap", "apt-get install", "systemctl mask", "tar"])
def test_a_failure_anywhere_leaves_no_image_no_tarball_and_no_tree(host: FakeHost, tmp_path: Path,
                                                                     step: str) -> None:
    builder, driver, request = make(tmp_path)
    host.fail_at = step
    with pytest.raises(CciError, match=f"{step} failed"):
        builder.build(driver, request, lambda chunk: None)
    assert driver.images == {}
    assert list(Path(request.options["cache"]).iterdir()) == []


def test_a_failed_import_or_alias_leaves_no_image(host: FakeHost, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    builder, driver, request = make(tmp_path)

    def refuse(alias: str, fingerprint: str, *, description: str = "") -> None:
        raise CciError("alias refused")

    monkeypatch.setattr(driver, "tag_image", refuse)
    with pytest.raises(CciError, match="alias refused"):
        builder.build(driver, request, lambda chunk: None)
    assert driver.images == {}


def test_a_failed_alias_never_deletes_an_image_that_was_there_before(host: FakeHost, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    builder, driver, request = make(tmp_path)
    image = builder.build(driver, request, lambda chunk: None)  # the same recipe again imports the same tarball

    def refuse(alias: str, fingerprint: str, *, description: str = "") -> None:
        raise CciError("alias refused")

    monkeypatch.setattr(driver, "tag_image", refuse)
    with pytest.raises(CciError, match="alias refused"):
        builder.build(driver, BuildRequest("other", request.base, options=request.options), lambda chunk: None)
    assert list(driver.images) == [image.fingerprint]


def test_the_ca_bundle_build_mode_is_in_the_build_only(host: FakeHost, tmp_path: Path) -> None:
    builder, driver, request = make(tmp_path, "build")
    builder.build(driver, request, lambda chunk: None)
    assert host.ca_during_apt == HOST_CA
    assert host.packed[f"rootfs/{host_build.IMAGE_CA_BUNDLE}"] == TREE_CA
    assert f"rootfs/{host_build.IMAGE_CA_COPY}" not in host.packed


def test_the_ca_bundle_image_mode_stays_in_the_image(host: FakeHost, tmp_path: Path) -> None:
    builder, driver, request = make(tmp_path, "image")
    builder.build(driver, request, lambda chunk: None)
    assert host.ca_during_apt == HOST_CA
    assert host.packed[f"rootfs/{host_build.IMAGE_CA_BUNDLE}"] == HOST_CA
    assert host.packed[f"rootfs/{host_build.IMAGE_CA_COPY}"] == HOST_CA  # update-ca-certificates keeps it


def test_the_ca_bundle_none_mode_never_reads_it(host: FakeHost, tmp_path: Path) -> None:
    (tmp_path / "host-ca.crt").unlink()
    builder, driver, request = make(tmp_path, "none")
    builder.build(driver, request, lambda chunk: None)
    assert host.ca_during_apt == TREE_CA


def test_a_bad_ca_mode_and_a_missing_bundle_are_clear_errors(host: FakeHost, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="host_ca_bundle is 'yes'"):
        host_build.HostImageBuilder(None, None, "yes")
    (tmp_path / "host-ca.crt").unlink()
    builder, driver, request = make(tmp_path, "build")
    with pytest.raises(UsageError, match="cannot read the host's CA bundle"):
        builder.build(driver, request, lambda chunk: None)
    assert driver.images == {} and list(Path(request.options["cache"]).iterdir()) == []


def test_the_host_build_needs_root(host: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builder, driver, request = make(tmp_path)
    monkeypatch.setattr(host_build.os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match="needs root"):
        builder.build(driver, request, lambda chunk: None)
    assert host.steps == []


def test_files_are_placed_inside_the_tree_only(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr").mkdir(parents=True)
    (rootfs / "usr/local").symlink_to("/tmp")
    with pytest.raises(CciError, match="is a symbolic link in the image"):
        host_build._inside(rootfs, "/usr/local/bin/claude")
    with pytest.raises(CciError, match="not a path inside the image"):
        host_build._inside(rootfs, "/../etc/passwd")


def test_mount_points_under_the_tree_deepest_first(tmp_path: Path) -> None:
    tree = tmp_path / "cci-host-x"
    info = "\n".join([
        "22 1 0:21 / / rw - ext4 /dev/vda rw",
        f"30 22 0:5 / {tree}/rootfs/proc rw - proc proc rw",
        f"31 22 0:6 / {tree}/rootfs/dev/pts rw - devpts devpts rw",
        f"32 22 0:7 / {tree}-other/rootfs/proc rw - proc proc rw",
        f"33 22 0:8 / {tree}/root\\040fs rw - tmpfs tmpfs rw",
    ])
    assert host_build.mounts_under(tree, info) == [f"{tree}/rootfs/dev/pts", f"{tree}/rootfs/proc",
                                                   f"{tree}/root fs"]


def test_the_default_mirror_is_the_hosts_debian_mirror(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert host_build.host_mirror(tmp_path) == "http://deb.debian.org/debian"  # not Debian: the default
    (tmp_path / "sources.list").write_text("deb http://security.debian.org/ bookworm-security main\n"
                                           "deb http://mirror.example/debian bookworm main\n")
    assert host_build.host_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://deb822.example/debian\nSuites: bookworm\n")
    assert host_build.host_mirror(tmp_path) == "http://deb822.example/debian"


def test_the_settings_of_plugins_images() -> None:
    assert host_build.settings_from({}) == (ImageFetch("latest", None), "none")
    assert host_build.settings_from({"claude_version": "2.1.332", "npm_registry": "http://r.test",
                                     "host_ca_bundle": "build"}) == (ImageFetch("2.1.332", "http://r.test"), "build")


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/streams/v1/index.json"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_auto_picks_the_server_when_it_answers_else_the_host(server: str) -> None:
    import socket

    chosen, reason = source.choose_source(server, timeout=5)
    assert chosen == "server" and "answered in" in reason
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    chosen, reason = source.choose_source(f"http://127.0.0.1:{port}/index.json", timeout=5)
    assert chosen == "host" and f"127.0.0.1:{port} is unreachable" in reason


@pytest.mark.parametrize(("routes", "code", "fragment"), [
    ({}, 5, "the npm registry has no @anthropic-ai/claude-code@latest"),
    ({"/@anthropic-ai%2Fclaude-code/latest": (500, b"")}, 4, "answered HTTP 500"),
])
def test_cci_build_host_reports_registry_problems_in_one_line_and_builds_nothing(
        routes: dict[str, tuple[int, bytes]], code: int, fragment: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cci_core.cli.main import cli
    from tests.fake_npm_registry import FakeRegistry

    registry = FakeRegistry()
    registry.routes.update(routes)
    try:
        config = tmp_path / "config" / "cci" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(f'[plugins.images]\nnpm_registry = "{registry.url}"\n')
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        cache = tmp_path / "cache"
        result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "build", "--source", "host", "--alias",
                                          "demo", "--mirror", "http://mirror.test/debian", "--cache", str(cache)])
    finally:
        registry.close()
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cci: ") and fragment in lines[0], result.output
    assert not cache.exists()


@pytest.mark.parametrize("how", PLANTS)
def test_a_cached_tarball_others_could_have_planted_is_built_again(host: FakeHost, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    builder, driver, request = make(tmp_path)
    cache = Path(request.options["cache"])
    cache.chmod(0o700)
    plant(cache / f"cci-{builder.recipe(request).digest()}.tar.zst", how)
    imported: list[bytes] = []
    import_image = driver.import_image
    monkeypatch.setattr(driver, "import_image", lambda tarball, **kw: (imported.append(tarball.read_bytes()),
                                                                       import_image(tarball, **kw))[1])
    builder.build(driver, request, lambda chunk: None)
    assert "debootstrap" in host.steps and imported[0].startswith(b"tarball of ")


def test_a_second_ctrl_c_while_cleaning_up_still_deletes_the_tree(host: FakeHost, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    builder, driver, request = make(tmp_path)
    host.fail_at = "apt-get install"
    unmount = host_build._unmount_under

    def impatient(directory: Path) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C again while the build cleans up
        unmount(directory)

    monkeypatch.setattr(host_build, "_unmount_under", impatient)
    with pytest.raises(CciError, match="apt-get install failed"):  # the first error, not the second Ctrl+C
        builder.build(driver, request, lambda chunk: None)
    assert list(Path(request.options["cache"]).iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_cached_tarball_is_on_disk_before_it_gets_its_name(host: FakeHost, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    builder, driver, request = make(tmp_path)
    synced: list[str] = []
    fsync = os.fsync
    monkeypatch.setattr(host_build.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                            fsync(fd))[1])
    builder.build(driver, request, lambda chunk: None)
    assert [Path(path).name for path in synced] == ["image.tar.zst"]
    assert Path(synced[0]).parent.parent == Path(request.options["cache"])  # the build tree's, before the rename


def test_two_builds_in_the_same_second_keep_their_own_versioned_alias(host: FakeHost, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_build.time, "strftime", lambda fmt, when=None: "20260101-000000")
    builder, driver, request = make(tmp_path)
    first = builder.build(driver, request, lambda chunk: None)
    second = builder.build(driver, BuildRequest("demo", "bookworm", options=request.options), lambda chunk: None)
    assert first.fingerprint != second.fingerprint
    assert driver.images[first.fingerprint].aliases == ("demo-20260101-000000",)
    assert driver.images[second.fingerprint].aliases == (f"demo-20260101-000000-{second.fingerprint[:12]}", "demo")


def test_a_second_ctrl_c_while_forgetting_an_unaliased_image_still_deletes_it(
        host: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    builder, driver, request = make(tmp_path)
    delete_image = driver.delete_image

    def refuse(alias: str, fingerprint: str, *, description: str = "") -> None:
        raise CciError("alias refused")

    def impatient(fingerprint: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        delete_image(fingerprint)

    monkeypatch.setattr(driver, "tag_image", refuse)
    monkeypatch.setattr(driver, "delete_image", impatient)
    with pytest.raises(CciError, match="alias refused"):
        builder.build(driver, request, lambda chunk: None)
    assert driver.images == {}
