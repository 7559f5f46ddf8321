"""A fake npm registry on 127.0.0.1 serving Claude Code's package metadata and tarballs (for the host build)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cci_builtin_plugins.tools import claude_package as package

BINARY = b"\x7fELF fake claude 9.9.9\n"
VERSION = "9.9.9"


def tarball(members: dict[str, bytes | None]) -> bytes:
    """A .tgz with these members: bytes make regular files, None a symbolic link to /etc/passwd."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o755
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class FakeRegistry:
    """Routes of a fake npm registry: path -> (status, body); every request is recorded."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                registry.requests.append(self.path)
                status, body = registry.routes.get(self.path, (404, b'{"error":"Not found"}'))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def publish(self, version: str = VERSION, tgz: bytes | None = None, *, architectures: tuple[str, ...] = ("x64",),
                claimed: str | None = None, tag: str = "latest") -> None:
        """The main package's ``version`` (also under ``tag``) and its linux platform packages."""
        tgz = tarball({"package/package.json": b"{}", "package/claude": BINARY}) if tgz is None else tgz
        optional = {package.platform_package(arch): version for arch in architectures}
        main = json.dumps({"name": package.PACKAGE, "version": version, "optionalDependencies": optional}).encode()
        self.routes[f"/@anthropic-ai%2Fclaude-code/{version}"] = (200, main)
        self.routes[f"/@anthropic-ai%2Fclaude-code/{tag}"] = (200, main)
        for arch in architectures:
            path = f"/tarballs/claude-code-linux-{arch}-{version}.tgz"
            self.routes[path] = (200, tgz)
            dist = {"tarball": f"{self.url}{path}", "integrity": claimed or integrity(tgz)}
            self.routes[f"/@anthropic-ai%2Fclaude-code-linux-{arch}/{version}"] = (
                200, json.dumps({"version": version, "dist": dist}).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
