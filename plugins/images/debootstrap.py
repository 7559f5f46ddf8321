"""The ``debootstrap`` image builder: a Debian or Ubuntu base image made on the host, no image server needed.

For machines that cannot reach the public image server (air-gapped networks,
proxies): debootstrap installs a minimal system from a package mirror into a
directory on the host, cci adds what its sessions need (the user ``code``
with uid 1000 and passwordless sudo, DHCP on eth0, an empty machine-id), packs
it as a unified Incus image and imports it. ``cci build --base NAME`` and
``cci build custom ... --base NAME`` then build on it offline. Needs root
(debootstrap and chroot do).

The image records its recipe (suite, mirror, packages, architecture and this
builder's version) as the property ``cci.recipe``; with ``if_changed`` an
image whose recipe matches is kept as it is, and a tarball cache directory
makes a rebuild of the same recipe an import of seconds.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cci_core.api import BuildRequest, CciError, ImageBuilder, UsageError

if TYPE_CHECKING:
    import subprocess

    from cci_core.api import Driver, ImageInfo, OutputHandler

#: bump when the customization below changes, so that cached images and tarballs are rebuilt
BUILDER_VERSION = "2"  # 2: no resolv.conf of the build host in the image
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: what a cci session needs: systemd as init, networking by DHCP, tmux, sudo
DEFAULT_PACKAGES = ("systemd-sysv", "dbus", "ifupdown", "isc-dhcp-client", "tmux", "sudo", "bash", "procps",
                    "iproute2", "iputils-ping", "ca-certificates", "less")
CODE_UID = 1000


class Recipe(NamedTuple):
    """Everything that decides the image's content."""

    suite: str
    mirror: str
    packages: tuple[str, ...]
    architecture: str

    def digest(self) -> str:
        import hashlib

        text = "\n".join([BUILDER_VERSION, self.suite, self.mirror, ",".join(self.packages), self.architecture])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe_from(request: BuildRequest) -> Recipe:
    """The recipe a request asks for (``base`` is the suite; ``options`` may set mirror and packages)."""
    import platform

    packages = request.options.get("packages")
    return Recipe(
        suite=request.base or DEFAULT_SUITE,
        mirror=request.options.get("mirror") or DEFAULT_MIRROR,
        packages=tuple(sorted(set(packages.split(",") if packages else DEFAULT_PACKAGES) - {""})),
        architecture=platform.machine(),
    )


def metadata_yaml(recipe: Recipe, description: str, created: int, *, builder: str = "debootstrap",
                  digest: str | None = None, properties: Mapping[str, str] | None = None) -> str:
    """The image's ``metadata.yaml``: architecture, properties (with the recipe) and the hostname templates."""
    extra = [f"  {key}: {value!r}" for key, value in sorted((properties or {}).items())]
    return "\n".join([
        f"architecture: {recipe.architecture}",
        f"creation_date: {created}",
        "properties:",
        f"  description: {description!r}",
        f"  os: {'ubuntu' if 'ubuntu' in recipe.mirror else 'debian'}",
        f"  release: {recipe.suite}",
        f"  cci.builder: {builder}",
        f"  cci.recipe: '{digest or recipe.digest()}'",
        *extra,
        "templates:",
        "  /etc/hostname:",
        "    when: [create, copy]",
        "    template: hostname.tpl",
        "  /etc/hosts:",
        "    when: [create, copy]",
        "    template: hosts.tpl",
        "",
    ])


def write_image_files(work: Path, metadata: str) -> None:
    """``metadata.yaml`` and the hostname templates beside ``work/rootfs``."""
    templates = work / "templates"
    templates.mkdir()
    (templates / "hostname.tpl").write_text("{{ instance.name }}\n")
    (templates / "hosts.tpl").write_text(
        "127.0.0.1 localhost\n127.0.1.1 {{ instance.name }}\n::1 localhost ip6-localhost ip6-loopback\n")
    (work / "metadata.yaml").write_text(metadata)


class DebootstrapBuilder(ImageBuilder):
    """A minimal Debian/Ubuntu base from a package mirror, built on the host and imported."""

    name = "debootstrap"
    summary = "a Debian/Ubuntu base image from a package mirror, built on the host (no image server)"

    def build(self, driver: Driver, request: BuildRequest, output: OutputHandler) -> ImageInfo:
        def say(line: str) -> None:
            output(f"==> {line}\n".encode())

        recipe = recipe_from(request)
        if os.geteuid() != 0:
            raise UsageError("building a base image needs root (debootstrap and chroot)", hint="run it with sudo")
        if shutil.which("debootstrap") is None:
            raise UsageError("debootstrap is not installed", hint="'sudo apt-get install debootstrap'")
        import tempfile

        cache = Path(request.options["cache"]) if request.options.get("cache") else None
        cached = cache / f"base-{recipe.digest()}.tar.gz" if cache else None
        with tempfile.TemporaryDirectory(prefix="cci-base-", dir=cache) as work:
            tarball = cached if cached is not None and cached.is_file() else Path(work, "image.tar.gz")
            if tarball != cached:
                self._make_tarball(Path(work), tarball, recipe, request.alias, say, output)
                if cached is not None:
                    shutil.copy2(tarball, cached)
            else:
                say(f"using the cached {cached}")
            say(f"importing it as {request.alias}")
            image = driver.import_image(tarball, description=f"cci base ({recipe.suite}, debootstrap)")
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for alias in (f"{request.alias}-{stamp}", request.alias):
            driver.tag_image(alias, image.fingerprint)
        say(f"{request.alias} -> {image.fingerprint[:12]}")
        return image._replace(aliases=(*image.aliases, f"{request.alias}-{stamp}", request.alias))

    def _make_tarball(self, work: Path, tarball: Path, recipe: Recipe, alias: str, say: Callable[[str], None],
                      output: OutputHandler) -> None:
        rootfs = work / "rootfs"
        say(f"debootstrap {recipe.suite} from {recipe.mirror} (a minute or two)")
        run_host_command(["debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
                          recipe.suite, str(rootfs), recipe.mirror], output, "debootstrap")
        say("adding the user code and the network configuration")
        customize(rootfs, output)
        write_image_files(work, metadata_yaml(recipe, f"cci base {alias} ({recipe.suite})", int(time.time())))
        say("packing the image")
        run_host_command(["tar", "-C", str(work), "--numeric-owner", "-czf", str(tarball), "metadata.yaml",
                          "templates", "rootfs"], output, "tar")


def customize(rootfs: Path, output: OutputHandler) -> None:
    """What cci sessions expect in the image: ``code`` (uid 1000, passwordless sudo), DHCP on eth0."""
    run_host_command(["chroot", str(rootfs), "useradd", "--create-home", "--uid", str(CODE_UID), "--user-group",
                      "--shell", "/bin/bash", "code"], output, "useradd")
    sudoers = rootfs / "etc/sudoers.d/code"
    sudoers.write_text("code ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    prepare_system(rootfs, output)


def prepare_system(rootfs: Path, output: OutputHandler) -> None:
    """What any container image of cci needs: DHCP on eth0, no resolv.conf or machine-id of the build host,
    no apt lists."""
    interfaces = rootfs / "etc/network/interfaces"
    if interfaces.parent.is_dir():
        interfaces.write_text("auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n")
    resolv_conf = rootfs / "etc/resolv.conf"  # debootstrap copied the build host's: DHCP writes it at boot
    resolv_conf.unlink(missing_ok=True)
    resolv_conf.write_text("# written by the DHCP client at boot\n")
    resolv_conf.chmod(0o644)
    (rootfs / "etc/machine-id").write_text("")  # each container gets its own at first boot
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    run_host_command(["chroot", str(rootfs), "apt-get", "clean"], output, "apt-get clean")
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def run_host_command(argv: Sequence[str], output: OutputHandler, what: str,
                     env: Mapping[str, str] | None = None) -> None:
    """Run a host command, streaming its output; a failure is one error naming the step.

    The command runs in its own process group: when cci is interrupted (Ctrl+C, SIGTERM), the whole group is
    stopped and waited for before the error goes on, so that no debootstrap or apt writes into a tree that
    the caller's cleanup is deleting.
    """
    import subprocess

    process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **(env or {})})
    assert process.stdout is not None
    try:
        for chunk in iter(lambda: process.stdout.read1(65536), b""):  # type: ignore[union-attr]
            output(chunk)
    except BaseException:
        stop_process_group(process)
        raise
    if process.wait() != 0:
        raise CciError(f"{what} failed with exit code {process.returncode}")


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM to the process group ``process`` leads, then SIGKILL after ``grace`` seconds; waits for it."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
