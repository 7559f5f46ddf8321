"""The stdlib Incus REST client against a scripted HTTP server on a unix socket."""

from __future__ import annotations

import json
import socket
import socketserver
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from cci_core.config import load_config
from cci_core.errors import BackendError, CciError, NotFoundError, UsageError
from cci_builtin_plugins.incus.connection import Endpoint
from cci_builtin_plugins.incus.driver import IncusDriver
from cci_builtin_plugins.incus.errors import APIError, APINotFound
from cci_builtin_plugins.incus.files import InstanceFiles
from cci_builtin_plugins.incus.http1 import Connection
from cci_builtin_plugins.incus.rest import IncusAPI, quote
from cci_builtin_plugins.incus.sftp import Attributes

Route = tuple[int, dict[str, Any]]


class FakeIncus(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers each (method, path) from ``routes``; records every request line."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[tuple[str, str, Any]] = []
        super().__init__(path, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeIncus

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, self.path, body))
        status, document = self.server.routes.get((self.command, self.path.split("?")[0]),
                                                  (404, {"type": "error", "error_code": 404, "error": "not found"}))
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *args: Any) -> None:
        pass


class RawServer:
    """A unix socket server that answers the requests it reads, one connection after the other, with
    ``answers`` as they are (``None``: close the connection instead); records each request's head."""

    def __init__(self, tmp_path: Path, answers: list[bytes | None]) -> None:
        self.path = tmp_path / "raw.socket"
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while self.answers:
            connection, _ = self._listener.accept()
            self.connections += 1
            with connection, connection.makefile("rb") as reader:
                while self.answers:
                    head = b"".join(iter(reader.readline, b"\r\n"))
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    reader.read(length)
                    self.requests.append(head)
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    connection.sendall(answer)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeIncus]:
    fake = FakeIncus(str(tmp_path / "incus.socket"))
    thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()


def api_for(server: FakeIncus, project: str | None = "proj") -> IncusAPI:
    return IncusAPI(Endpoint(socket=Path(server.server_address)), project)  # type: ignore[arg-type]


def sync(metadata: Any) -> Route:
    return 200, {"type": "sync", "metadata": metadata}


def test_every_request_names_the_project_and_names_are_quoted(server: FakeIncus) -> None:
    server.routes[("GET", "/1.0/instances/a%2Fb")] = sync({"name": "a/b"})
    assert api_for(server).get(f"/1.0/instances/{quote('a/b')}", "reading", recursion=1) == {"name": "a/b"}
    assert server.requests[-1][1] == "/1.0/instances/a%2Fb?recursion=1&project=proj"
    api_for(server, project="default").get(f"/1.0/instances/{quote('a/b')}", "reading")
    assert server.requests[-1][1] == "/1.0/instances/a%2Fb"


def test_a_404_is_a_not_found_error_with_the_action_and_incus_message(server: FakeIncus) -> None:
    with pytest.raises(NotFoundError) as raised:
        api_for(server).get("/1.0/instances/missing", "looking up missing")
    assert str(raised.value) == "looking up missing: not found"
    assert raised.value.exit_code == 5


def test_a_failed_operation_raises_with_its_error(server: FakeIncus) -> None:
    server.routes[("POST", "/1.0/instances")] = (202, {"type": "async", "operation": "/1.0/operations/op1"})
    server.routes[("GET", "/1.0/operations/op1/wait")] = (
        200, {"type": "error", "error_code": 500, "error": "Image not provided for instance creation"})
    with pytest.raises(APIError) as raised:
        api_for(server).call("POST", "/1.0/instances", "creating c1", {"name": "c1"})
    assert str(raised.value) == "creating c1: Image not provided for instance creation"
    assert raised.value.exit_code == BackendError.exit_code
    assert server.requests[-1][:2] == ("GET", "/1.0/operations/op1/wait?timeout=-1&project=proj")


def test_an_async_call_returns_the_finished_operation(server: FakeIncus) -> None:
    server.routes[("DELETE", "/1.0/images/abc")] = (202, {"type": "async", "operation": "/1.0/operations/op2"})
    server.routes[("GET", "/1.0/operations/op2/wait")] = sync({"status": "Success", "metadata": {"ok": 1}})
    assert api_for(server).call("DELETE", "/1.0/images/abc", "deleting")["metadata"] == {"ok": 1}


def test_a_request_interrupted_by_ctrl_c_leaves_the_next_one_working(server: FakeIncus,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The cleanup after Ctrl+C (delete the container, labels back) must not fail on a half-used connection."""
    server.routes[("GET", "/1.0")] = sync({"api_version": "1.0"})
    api = api_for(server)
    real = Connection._answer
    interrupted: list[bool] = []

    def answer(self: Connection, method: str) -> Any:
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt  # the request went out; the answer never was read
        return real(self, method)

    monkeypatch.setattr(Connection, "_answer", answer)
    with pytest.raises(KeyboardInterrupt):
        api.get("/1.0", "reading")
    assert api.get("/1.0", "reading") == {"api_version": "1.0"}


def test_a_broken_answer_is_not_sent_again(tmp_path: Path) -> None:
    """Incus may have acted on it (an exec run, a container made): resending could do it twice."""
    with RawServer(tmp_path, [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"type\": \"sync\"}"]) as raw:
        with pytest.raises(BackendError, match="bad answer from Incus on .*: the answer ended 34 bytes short"):
            IncusAPI(Endpoint(socket=raw.path), "proj").request("POST", "/1.0/instances", "creating c1",
                                                                body={"name": "c1"})
    assert [request.split(b"\r\n")[0] for request in raw.requests] == [b"POST /1.0/instances?project=proj HTTP/1.1"]


def test_a_kept_alive_connection_the_server_closed_is_opened_again_once(tmp_path: Path) -> None:
    body = b'{"type": "sync", "metadata": 1}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with RawServer(tmp_path, [answer, None, answer]) as raw:  # None: closes the connection without answering
        api = IncusAPI(Endpoint(socket=raw.path), None)
        assert api.get("/1.0", "reading") == 1
        assert api.get("/1.0", "reading") == 1
    assert len(raw.requests) == 3 and raw.connections == 2


def test_a_stopped_daemon_is_one_actionable_line(tmp_path: Path) -> None:
    api = IncusAPI(Endpoint(socket=tmp_path / "nothing-listens"), None)
    with pytest.raises(BackendError, match="Incus is not running: connection refused on .*nothing-listens"):
        api.get("/1.0", "connecting")


def test_images_are_named_by_alias_or_a_long_enough_fingerprint_prefix(server: FakeIncus, tmp_path: Path) -> None:
    images = [{"fingerprint": "abcdef0123456789" + "0" * 48, "aliases": [{"name": "cci"}]},
              {"fingerprint": "abcdef0123459999" + "0" * 48, "aliases": []}]
    server.routes[("GET", "/1.0/images")] = sync(images)
    driver = IncusDriver(load_config(tmp_path, environ={}))
    driver.__dict__["api"] = api_for(server)
    assert driver._resolve_image("cci") == images[0]["fingerprint"]
    assert driver._resolve_image("ABCDEF012345678") == images[0]["fingerprint"]
    for too_vague in ("", "abc", "abcdef0123"):
        with pytest.raises(NotFoundError, match="matches no image"):
            driver._resolve_image(too_vague)
    with pytest.raises(NotFoundError, match="is ambiguous"):
        driver._resolve_image("abcdef012345")


class ScriptedSession:
    """An SFTP session on a dict (path -> directory entries, file bytes, or a file type such as "FIFO");
    ``vanish`` names files deleted between a directory listing and their reading; ``gone`` makes the
    whole instance disappear then; ``swapped`` names files that are a FIFO once opened."""

    def __init__(self, tree: dict[str, Any], vanish: set[str], gone: bool = False,
                 swapped: frozenset[str] = frozenset()) -> None:
        self.tree, self.vanish, self.gone, self.swapped = tree, vanish, gone, swapped
        self.opened: list[str] = []

    def __enter__(self) -> ScriptedSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def lstat(self, path: str) -> Attributes:
        if path in self.vanish:
            if self.gone:
                self.tree = {}
            raise APINotFound("reading", 404, "not found")
        if path not in self.tree:
            raise APINotFound("reading", 404, "Instance not found" if self.gone else "not found")
        entry = self.tree[path]
        if isinstance(entry, list):
            return Attributes(stat.S_IFDIR | 0o755)
        if isinstance(entry, bytes):
            return Attributes(stat.S_IFREG | 0o640, len(entry))
        return Attributes({"FIFO": stat.S_IFIFO, "socket": stat.S_IFSOCK, "device": stat.S_IFCHR}[entry] | 0o644)

    stat = lstat

    def listdir(self, path: str) -> Iterator[tuple[str, Attributes]]:
        names = self.tree[path]
        yield from [(name, self.lstat(f"{path}/{name}") if f"{path}/{name}" not in self.vanish else Attributes(
            stat.S_IFREG | 0o644)) for name in names]

    def open(self, path: str) -> bytes:
        assert isinstance(self.lstat(path), Attributes) and isinstance(self.tree[path], bytes), path
        self.opened.append(path)
        return path.encode()

    def fstat(self, handle: bytes, path: str) -> Attributes:
        return Attributes(stat.S_IFIFO | 0o644) if path in self.swapped else self.lstat(path)

    def chunks(self, handle: bytes, path: str, size: int) -> Iterator[bytes]:
        yield self.tree[path]

    def close_handle(self, handle: bytes) -> None:
        pass


class ScriptedFiles(InstanceFiles):
    """Instance files over a :class:`ScriptedSession`."""

    def __init__(self, session: ScriptedSession) -> None:
        super().__init__(None, "c1")  # type: ignore[arg-type]
        self.session = session

    def _sftp(self) -> Any:
        return self.session


TREE: dict[str, Any] = {"/s": ["a", "tmp", "d"], "/s/a": b"kept", "/s/d": ["b"], "/s/d/b": b"too"}


def copied(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_a_tree_pull_skips_files_removed_since_the_listing(tmp_path: Path) -> None:
    ScriptedFiles(ScriptedSession(TREE, vanish={"/s/tmp"})).pull_tree("/s", tmp_path / "copy")
    assert copied(tmp_path / "copy") == ["a", "d", "d/b"]
    assert (tmp_path / "copy" / "a").stat().st_mode & 0o777 == 0o640


def test_a_tree_pull_fails_when_the_container_goes_away_meanwhile(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        ScriptedFiles(ScriptedSession(TREE, vanish={"/s/tmp"}, gone=True)).pull_tree("/s", tmp_path / "copy")


def test_a_tree_pull_never_opens_fifos_sockets_or_devices(tmp_path: Path) -> None:
    tree = {**TREE, "/s": ["a", "d", "fifo", "sock", "null", "late"], "/s/fifo": "FIFO", "/s/sock": "socket",
            "/s/null": "device", "/s/late": b"a file when listed, a FIFO when opened"}
    session = ScriptedSession(tree, vanish=set(), swapped=frozenset({"/s/late"}))
    skipped: list[tuple[str, str]] = []
    ScriptedFiles(session).pull_tree("/s", tmp_path / "copy", on_skip=lambda *found: skipped.append(found))
    assert copied(tmp_path / "copy") == ["a", "d", "d/b"]
    assert sorted(skipped) == [("/s/fifo", "FIFO"), ("/s/late", "FIFO"), ("/s/null", "device"), ("/s/sock", "socket")]
    assert session.opened == ["/s/a", "/s/d/b", "/s/late"]  # never the FIFO, socket or device
    for single in ("/s/fifo", "/s/sock", "/s/null"):
        with pytest.raises(UsageError, match=f"c1:{single} is a .*only regular files, directories and symlinks"):
            ScriptedFiles(session).pull_file_to(single, tmp_path / "single")
        with pytest.raises(UsageError, match=f"c1:{single} is a "):
            ScriptedFiles(session).pull_tree(single, tmp_path / "single")
    with pytest.raises(UsageError, match="c1:/s/late is a FIFO"):
        ScriptedFiles(session).pull_file("/s/late")
    assert not (tmp_path / "single").exists()


def test_a_file_read_into_memory_has_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_builtin_plugins.incus import files

    assert ScriptedFiles(ScriptedSession(TREE, vanish=set())).pull_file("/s/a") == b"kept"
    monkeypatch.setattr(files, "MAX_READ", 3)
    with pytest.raises(CciError, match="c1:/s/a has more than the 0 MiB that cci reads into memory"):
        ScriptedFiles(ScriptedSession(TREE, vanish=set())).pull_file("/s/a")


ROOT = Path(__file__).resolve().parents[2]


def test_cci_has_one_incus_client_and_pylxd_is_only_a_test_dependency() -> None:
    import re
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    importing = re.compile(r"^\s*(import|from)\s+pylxd\b", re.MULTILINE)
    offenders = [str(path.relative_to(ROOT)) for folder in ("cci_core", "plugins")
                 for path in sorted((ROOT / folder).rglob("*.py")) if importing.search(path.read_text())]
    assert offenders == []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [dependency for dependency in project["dependencies"] if dependency.startswith("pylxd")]
    assert [dependency for dependency in project["optional-dependencies"]["test"] if dependency.startswith("pylxd")]


@pytest.mark.parametrize("name", ["", "a b", "x" * 64, "-a", "a-", "a_b", "a.b", "abc\n", "é"])
def test_a_bad_container_name_is_refused_with_the_rule(name: str, tmp_path: Path) -> None:
    problem = IncusDriver(load_config(tmp_path, environ={})).check_container_name(name)
    assert problem and "1 to 63 letters, digits and hyphens" in problem


@pytest.mark.parametrize("name", ["a", "x" * 63, "cci-0123abcd-1", "A-9"])
def test_a_good_container_name_is_accepted(name: str, tmp_path: Path) -> None:
    assert IncusDriver(load_config(tmp_path, environ={})).check_container_name(name) is None


@pytest.mark.parametrize("alias", ["", "a b", "a\tb", "a\nb", "a\x1bb"])
def test_an_image_alias_with_spaces_or_control_characters_is_refused(alias: str, tmp_path: Path) -> None:
    assert IncusDriver(load_config(tmp_path, environ={})).check_image_alias(alias)


def test_a_create_puts_the_limits_and_the_root_disk_size_in_its_one_request(server: FakeIncus, tmp_path: Path) -> None:
    """No update of the new container is needed before its start for [limits] (disk included)."""
    from cci_core.driver import ContainerSpec

    server.routes[("GET", "/1.0/profiles/default")] = sync(
        {"devices": {"root": {"type": "disk", "path": "/", "pool": "fast"}, "eth0": {"type": "nic"}}})
    server.routes[("POST", "/1.0/instances")] = sync({})
    server.routes[("GET", "/1.0/instances/c1")] = sync({"name": "c1", "config": {}, "expanded_devices": {}})
    config = load_config(tmp_path, environ={"CCI_LIMITS_DISK": "5GiB", "CCI_LIMITS_CPU": "2"})
    driver = IncusDriver(config)
    driver.__dict__["api"] = api_for(server)
    driver.create(ContainerSpec("c1", "img", limits=config.limits))
    driver.create(ContainerSpec("c1", "img", limits=config.limits))
    creates = [body for method, path, body in server.requests if method == "POST"]
    assert creates[0]["devices"] == {"root": {"type": "disk", "path": "/", "pool": "fast", "size": str(5 << 30)}}
    assert creates[0]["config"]["limits.cpu"] == "2" and creates[0]["config"]["limits.processes"] == "10000"
    assert creates[1] == creates[0]
    assert [path.split("?")[0] for method, path, _ in server.requests].count("/1.0/profiles/default") == 1


class AsPosted(dict):  # type: ignore[type-arg]
    """Routes that answer a read of the container last posted as Incus would after its create: what was posted,
    over the ``profile``'s devices."""

    def __init__(self, server: FakeIncus, routes: dict[tuple[str, str], Route],
                 profile: dict[str, Any] | None = None) -> None:
        super().__init__(routes)
        self.server, self.profile = server, profile or {}

    def get(self, key: Any, default: Any = None) -> Any:
        posted = [body for method, _, body in self.server.requests if method == "POST"]
        if key[0] == "GET" and posted and key[1] == f"/1.0/instances/{posted[-1]['name']}":
            return sync({"name": posted[-1]["name"], "config": posted[-1]["config"],
                         "expanded_devices": {**self.profile, **posted[-1]["devices"]}})
        return super().get(key, default)


def test_a_create_with_mounts_and_a_network_leaves_its_configure_nothing_to_update(server: FakeIncus,
                                                                                    tmp_path: Path) -> None:
    """The session's own mounts and NIC go into the create request; configuring the same again sends nothing,
    anything more one update."""
    from cci_core.context import Mount
    from cci_core.driver import ContainerSpec

    profile = {"root": {"type": "disk", "path": "/", "pool": "fast"}, "eth0": {"type": "nic", "network": "br0"}}

    server.routes = AsPosted(server, server.routes, profile)
    server.routes[("GET", "/1.0/profiles/default")] = sync({"devices": profile})
    server.routes[("POST", "/1.0/instances")] = sync({})
    server.routes[("PATCH", "/1.0/instances/c1")] = sync({})
    driver = IncusDriver(load_config(tmp_path, environ={}))
    driver.__dict__["api"] = api_for(server)
    mounts = [Mount("workspace", tmp_path, "/workspace", shift=True)]
    container = driver.create(ContainerSpec("c1", "img", config={"security.nesting": "true"}, mounts=mounts,
                                            network="cci-net"))
    created = [body for method, _, body in server.requests if method == "POST"][0]
    assert created["devices"]["eth0"] == {"type": "nic", "network": "cci-net", "name": "eth0",
                                          "security.port_isolation": "true", "security.mac_filtering": "true",
                                          "security.ipv4_filtering": "true"}
    assert created["devices"]["workspace"]["source"] == str(tmp_path)
    assert created["config"]["boot.autostart"] == "false" and created["config"]["security.nesting"] == "true"
    container.configure({"security.nesting": "true"}, mounts, "cci-net")
    assert not [method for method, _, _ in server.requests if method == "PATCH"]
    container.configure({"security.nesting": "true", "environment.X": "1"}, mounts, "cci-net")
    patches = [body for method, _, body in server.requests if method == "PATCH"]
    assert len(patches) == 1 and patches[0]["config"]["environment.X"] == "1"


def test_without_a_root_disk_in_the_profile_a_create_leaves_the_size_to_the_start(server: FakeIncus,
                                                                                  tmp_path: Path) -> None:
    from cci_core.driver import ContainerSpec

    server.routes[("GET", "/1.0/profiles/default")] = sync({"devices": {}})
    server.routes[("POST", "/1.0/instances")] = sync({})
    server.routes[("GET", "/1.0/instances/c1")] = sync({"name": "c1", "config": {}, "expanded_devices": {}})
    config = load_config(tmp_path, environ={})
    driver = IncusDriver(config)
    driver.__dict__["api"] = api_for(server)
    driver.create(ContainerSpec("c1", "img", limits=config.limits))
    assert [body for method, _, body in server.requests if method == "POST"][0]["devices"] == {}


def test_names_with_url_characters_are_one_quoted_path_segment(server: FakeIncus, tmp_path: Path) -> None:
    name = "x?y#z%2F/../w"
    driver = IncusDriver(load_config(tmp_path, environ={}))
    driver.__dict__["api"] = api_for(server)
    assert driver.check_image_alias(name) is None  # the driver quotes it: Incus itself accepts such an alias
    assert not driver.image_exists(name) and not driver.exists(name)
    with pytest.raises(NotFoundError):
        driver.get(name)
    with pytest.raises(APIError):
        driver.tag_image(name, "0" * 64)
    segment = "x%3Fy%23z%252F%2F..%2Fw"
    assert [(method, path.split("?")[0]) for method, path, _ in server.requests] == [
        ("GET", f"/1.0/images/aliases/{segment}"), ("GET", f"/1.0/instances/{segment}"),
        ("GET", f"/1.0/instances/{segment}"), ("GET", f"/1.0/images/aliases/{segment}"),
        ("POST", "/1.0/images/aliases")]
    assert server.requests[-1][2]["name"] == name


# -- streamed request bodies ---------------------------------------------------------------------------------


def test_a_streamed_body_sends_exactly_the_announced_length_and_can_be_sent_again(tmp_path: Path) -> None:
    from cci_builtin_plugins.incus.files import ExactLength

    source = tmp_path / "f"
    source.write_bytes(b"0123456789")
    with source.open("rb") as handle:
        handle.seek(2)
        body = ExactLength(handle, 5)
        with source.open("ab") as grower:  # grows meanwhile: cut at the Content-Length sent
            grower.write(b"more")
        assert b"".join(iter(lambda: body.read(2), b"")) == b"23456"
        body.seek(0)  # a retried request sends it again from its start
        assert body.read() == b"23456" and body.read() == b""


def test_a_streamed_body_whose_file_shrank_is_an_error_not_a_short_request(tmp_path: Path) -> None:
    from cci_builtin_plugins.incus.files import ExactLength

    source = tmp_path / "f"
    source.write_bytes(b"0123456789")
    with source.open("rb", buffering=0) as handle:  # unbuffered: the shrink is seen at the next read
        body = ExactLength(handle, 10)
        assert body.read(4) == b"0123"
        with source.open("r+b") as shrinker:
            shrinker.truncate(6)
        assert body.read(4) == b"45"
        with pytest.raises(CciError, match=r"changed while it was copied: it ended 4 bytes short of the 10"):
            body.read(4)


def test_a_read_started_soon_runs_beside_the_next_and_hands_over_its_answer_or_error(server: FakeIncus) -> None:
    """Both reads are in flight at once (each waits for the other at the server), on two connections."""
    both = threading.Barrier(2, timeout=5)

    class Meeting(dict):  # type: ignore[type-arg]
        def get(self, key: Any, default: Any = None) -> Any:
            if key in (("GET", "/1.0/a"), ("GET", "/1.0/b")):
                both.wait()  # (a read made after the other would time out here)
            return super().get(key, default)

    server.routes = Meeting({("GET", "/1.0/a"): sync({"name": "a"}), ("GET", "/1.0/b"): sync({"name": "b"})})
    api = api_for(server)
    later = api.get_soon("/1.0/a", "reading a")
    assert api.get("/1.0/b", "reading b") == {"name": "b"}
    assert later() == {"name": "a"}
    with pytest.raises(APINotFound, match="reading c"):
        api.get_soon("/1.0/c", "reading c")()


def test_a_network_ensured_without_a_proxy_is_not_asked_for_its_proxy_again(server: FakeIncus,
                                                                           tmp_path: Path) -> None:
    """Its containers' create and configure read no proxy container; those of a network with a proxy plan do."""
    from cci_core.context import Mount
    from cci_core.driver import ContainerSpec
    from cci_core.network_policy import NetworkPlan, ProxySpec

    server.routes = AsPosted(server, {("POST", "/1.0/instances"): sync({})})
    driver = IncusDriver(load_config(tmp_path, environ={}))
    driver.__dict__["api"] = api_for(server)
    driver.__dict__["networks"] = type("Networks", (), {"ensure": staticmethod(lambda plan: plan.policy)})()
    mounts = [Mount("workspace", tmp_path, "/workspace", shift=True)]

    def proxy_reads_of_a_launch(network: str, name: str) -> list[str]:
        server.requests.clear()
        container = driver.create(ContainerSpec(name, "img", mounts=mounts, network=network))
        container.configure({}, mounts, network)
        return [path for method, path, _ in server.requests if method == "GET" and "cci-proxy-" in path]

    plain = NetworkPlan("plain", "", "allow", ())
    assert driver.ensure_network(plain) == "plain"
    assert proxy_reads_of_a_launch("plain", "c1") == []
    driver.ensure_network(plain._replace(policy="proxied", proxy=ProxySpec(rules=())))
    assert len(proxy_reads_of_a_launch("proxied", "c2")) == 2  # asked at the create and at the configure


def test_limits_a_container_has_as_last_read_cost_no_request_and_others_one_update(server: FakeIncus,
                                                                                  tmp_path: Path) -> None:
    """Made under its [limits] (the create carries them): nothing read or sent; changed: read, then put."""
    from cci_builtin_plugins.incus.container import IncusContainer
    from cci_builtin_plugins.incus.limits import instance_limits, root_size

    limits = load_config(tmp_path, environ={}).limits
    config = {key: value for key, value in instance_limits(limits).items() if value}
    root = {"type": "disk", "path": "/", "pool": "fast", "size": root_size(limits)}
    instance = {"name": "c1", "config": config, "devices": {"root": root}, "expanded_devices": {"root": root}}
    server.routes[("GET", "/1.0/instances/c1")] = sync(instance)
    server.routes[("PUT", "/1.0/instances/c1")] = sync({})
    IncusContainer(api_for(server), instance).apply_limits(limits)
    assert server.requests == []
    IncusContainer(api_for(server), instance).apply_limits(limits._replace(cpu="3"))
    assert [method for method, _, _ in server.requests] == ["GET", "PUT", "GET"]
    assert server.requests[1][2]["config"]["limits.cpu"] == "3"


@pytest.mark.parametrize("how", ["refused at once", "in its operation"])
def test_a_stop_of_a_container_that_stopped_by_itself_meanwhile_is_done(server: FakeIncus, how: str) -> None:
    """Powered off from inside between a look at it and the stop: Incus says it is stopped already, which is what
    the stop was for (a 'cci run' whose command powered the container off left it behind, ending failed)."""
    from cci_builtin_plugins.incus.container import IncusContainer

    refused = (400, {"type": "error", "error_code": 400, "error": "The instance is already stopped"})
    if how == "refused at once":
        server.routes[("PUT", "/1.0/instances/c1/state")] = refused
    else:
        server.routes[("PUT", "/1.0/instances/c1/state")] = (202, {"type": "async", "operation": "/1.0/operations/s"})
        server.routes[("GET", "/1.0/operations/s/wait")] = sync({"status": "Failure",
                                                                 "err": "The instance is already stopped"})
    container = IncusContainer(api_for(server), {"name": "c1", "status": "Running"})
    container.stop(force=True)
    container.kill()
    server.routes[("PUT", "/1.0/instances/c1/state")] = (500, {"type": "error", "error_code": 500,
                                                               "error": "Failed stopping instance: denied"})
    with pytest.raises(APIError, match="denied"):  # any other refusal is still an error
        container.stop(force=True)
