"""A Docker image made on the host without Docker or a registry: a docker-archive tarball, as ``docker load`` reads.

The image holds one file, Debian's statically linked busybox (``/bin/busybox``),
taken from the host's apt (``apt-get download`` checks it against the signed
archive) and kept in a cache directory, so it is fetched once per machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import tarfile
import tempfile
from pathlib import Path

BUSYBOX_PACKAGE = "busybox-static"
#: Docker's names for the machine architectures the tests run on
DOCKER_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def busybox_static(cache: Path) -> Path:
    """Debian's static busybox binary, downloaded by apt on the host into ``cache`` once."""
    binary = cache / "busybox-static" / "busybox"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as scratch:
        fetched = subprocess.run(["apt-get", "download", "-q", BUSYBOX_PACKAGE], cwd=scratch, capture_output=True,
                                 text=True, check=False)
        if fetched.returncode:
            raise RuntimeError(f"apt-get download {BUSYBOX_PACKAGE} failed: {fetched.stderr.strip()}")
        [package] = Path(scratch).glob(f"{BUSYBOX_PACKAGE}_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(package), f"{scratch}/root"], check=True)
        Path(scratch, "root", "bin", "busybox").replace(binary)  # atomic: a concurrent run sees all or nothing
    return binary


def _layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed layer tar of ``files`` (path in the image: content and mode), owned by root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        directories = sorted({str(Path(path).parent) for path in files} - {"."})
        for directory in directories:
            entry = tarfile.TarInfo(directory)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            layer.addfile(entry)
        for path, (content, mode) in sorted(files.items()):
            entry = tarfile.TarInfo(path)
            entry.size, entry.mode = len(content), mode
            layer.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


def write_archive(target: Path, tag: str, files: dict[str, tuple[bytes, int]]) -> None:
    """Write a one-layer image tagged ``tag`` holding ``files`` to ``target`` (a ``docker load`` tarball)."""
    layer = _layer(files)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": DOCKER_ARCHITECTURES.get(platform.machine(), platform.machine()),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/busybox", "sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "tests/docker_archive.py"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]).encode()
    with tarfile.open(target, mode="w") as archive:
        for name, content in ((config_name, config), (layer_name, layer), ("manifest.json", manifest)):
            if "/" in name:
                directory = tarfile.TarInfo(name.split("/")[0])
                directory.type, directory.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(directory)
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(content), 0o644
            archive.addfile(entry, io.BytesIO(content))


def busybox_image(target: Path, tag: str, cache: Path) -> None:
    """Write a docker-archive of an image holding only ``/bin/busybox`` to ``target``."""
    write_archive(target, tag, {"bin/busybox": (busybox_static(cache).read_bytes(), 0o755)})
