"""The cci image built with everything fetched on the host: no image server, no internet in any container.

debootstrap installs a minimal Debian (default 13 "trixie") from a package
mirror into a directory on the host, apt in a chroot adds the packages of
:mod:`~cci_builtin_plugins.images.contents`, cci adds the user ``code`` and
the network configuration (the base builder's customization), the tool's files
(Claude Code's binary, fetched from the npm registry by the tool adapter) are
copied in, and the tree is packed (zstd, else gzip) and imported. Needs root.

The image records its recipe as ``cci.recipe`` and the tool's version as
``cci.tool.<tool>.version``; with a cache directory the tarball of a recipe is
kept, and the same recipe later is imported in seconds (a tarball only when no one
else could have put it there). A failed or interrupted build leaves no image, no
temporary tree and nothing mounted.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cci_core.api import (
    BuildRequest,
    CciError,
    ImageBuilder,
    ImageFetch,
    ToolAdapter,
    UsageError,
    ignoring_interrupts,
    only_mine,
    tool_version_property,
)
from cci_builtin_plugins.images import contents
from cci_builtin_plugins.images.debootstrap import Recipe, customize, metadata_yaml, run_host_command, write_image_files

if TYPE_CHECKING:
    from cci_core.api import Driver, ImageInfo, OutputHandler

#: bump when what this module does to the tree changes, so that cached images and tarballs are rebuilt
HOST_BUILDER_VERSION = "1"
#: ``[plugins.images] host_ca_bundle``: the host's CA bundle in the build only, kept in the image, or neither
CA_MODES = ("none", "build", "image")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
IMAGE_CA_COPY = "usr/local/share/ca-certificates/cci-host-bundle.crt"
#: apt and debootstrap go through the host's proxy, if it has one
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
POLICY_RC_D = "usr/sbin/policy-rc.d"


class HostRecipe(NamedTuple):
    """Everything that decides the image's content."""

    base: Recipe
    tool: str
    tool_version: str
    ca_bundle: str
    ca_digest: str

    def digest(self) -> str:
        import hashlib

        text = "\n".join([HOST_BUILDER_VERSION, self.base.digest(), contents.definition(), self.tool,
                          self.tool_version, self.ca_bundle, self.ca_digest])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def properties(self) -> dict[str, str]:
        return {tool_version_property(self.tool): self.tool_version} if self.tool_version else {}


class HostImageBuilder(ImageBuilder):
    """The cci image from a package mirror and the npm registry, built on the host and imported."""

    name = "host"
    summary = "the cci image from a package mirror and the tool's registry, fetched on the host (no image server)"

    def __init__(self, tool: ToolAdapter | None = None, fetch: ImageFetch | None = None,
                 ca_bundle: str = "none") -> None:
        if ca_bundle not in CA_MODES:
            raise UsageError(f"[plugins.images] host_ca_bundle is {ca_bundle!r}",
                             hint=f"use one of {', '.join(CA_MODES)}")
        self.tool = tool
        self.fetch = fetch or ImageFetch()
        self.ca_bundle = ca_bundle

    def recipe(self, request: BuildRequest) -> HostRecipe:
        """The recipe of ``request`` (``base`` is the suite; options ``mirror``); asks the registry for ``latest``."""
        import hashlib
        import platform

        base = Recipe(suite=request.base or contents.SUITE, mirror=request.options.get("mirror") or "",
                      packages=tuple(sorted(set(contents.SYSTEM_PACKAGES) | set(contents.host_packages()))),
                      architecture=platform.machine())
        version = (self.tool.image_version(self.fetch) if self.tool else None) or ""
        ca_digest = hashlib.sha256(_read_ca_bundle()).hexdigest()[:16] if self.ca_bundle == "image" else ""
        return HostRecipe(base, self.tool.name if self.tool and version else "", version, self.ca_bundle, ca_digest)

    def build(self, driver: Driver, request: BuildRequest, output: OutputHandler,
              recipe: HostRecipe | None = None) -> ImageInfo:
        """Build and import the image; ``recipe`` as :meth:`recipe` made it (asked again when not given)."""
        check_host_build(request, "the image")
        recipe = recipe or self.recipe(request)
        return build_and_import(driver, request, output, name=f"cci-{recipe.digest()}",
                                description=_description(recipe),
                                make_tarball=lambda work, tarball, zstd, say: self._make_tarball(
                                    work, tarball, request, recipe, zstd, say, output))

    def _make_tarball(self, work: Path, tarball: Path, request: BuildRequest, recipe: HostRecipe, zstd: bool,
                      say: Callable[[str], None], output: OutputHandler) -> None:
        rootfs = work / "rootfs"
        base = recipe.base
        proxy = {name: os.environ[name] for name in PROXY_VARIABLES if name in os.environ}
        files = ()
        if self.tool is not None and recipe.tool_version:  # fetched first: a registry problem fails in seconds
            files = self.tool.image_files(recipe.tool_version, self.fetch, say)
        say(f"debootstrap {base.suite} from {request.options['mirror']} (a minute or two)")
        run_host_command(["debootstrap", "--variant=minbase", f"--include={','.join(contents.SYSTEM_PACKAGES)}",
                          base.suite, str(rootfs), request.options["mirror"]], output, "debootstrap", env=proxy)
        policy = rootfs / POLICY_RC_D  # no daemon starts in the chroot
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        original_ca = install_ca_bundle(rootfs, self.ca_bundle)
        apt_env = {**proxy, "DEBIAN_FRONTEND": "noninteractive"}
        say("apt-get update in the new system")
        run_host_command(["chroot", str(rootfs), "apt-get", "update"], output, "apt-get update", env=apt_env)
        optional = [name for name in contents.OPTIONAL_PACKAGES
                    if _succeeds(["chroot", str(rootfs), "apt-cache", "show", name])]
        packages = [*contents.host_packages(), *optional]
        say(f"installing {len(packages)} packages: {' '.join(packages)}")
        run_host_command(["chroot", str(rootfs), "apt-get", "install", "-y", "--no-install-recommends", *packages],
                         output, "apt-get install", env=apt_env)
        say(f"adding the user {contents.USER}, the network configuration and the systemd units")
        customize(rootfs, output)
        configure(rootfs, output)
        remove_ca_bundle(rootfs, self.ca_bundle, original_ca)
        policy.unlink()
        for file in files:
            say(f"copying {file.source} to {file.path}")
            place_file(rootfs, file.path, file.source, file.mode)
        say("doing what a first boot would do (ldconfig, the journal catalog, /etc/.updated)")
        for command in contents.FIRST_BOOT_WORK:
            run_host_command(["chroot", str(rootfs), *command.split()], output, command)
        write_image_files(work, metadata_yaml(base, _description(recipe), int(time.time()), builder=self.name,
                                              digest=recipe.digest(), properties=recipe.properties()))
        say(f"packing the image ({'zstd' if zstd else 'gzip: zstd is not installed'})")
        pack(work, tarball, zstd, output)


def check_host_build(request: BuildRequest, what: str) -> None:
    """Refuse a host build of ``what`` that cannot work: not root, a program missing, no mirror."""
    if os.geteuid() != 0:
        raise UsageError(f"building {what} on the host needs root (debootstrap and chroot)", hint="run it with sudo")
    for program in ("debootstrap", "chroot", "tar"):
        if shutil.which(program) is None:
            raise UsageError(f"{program} is not installed", hint=f"'sudo apt-get install {program}'")
    if not request.options.get("mirror"):
        raise UsageError("no package mirror given for the host build", hint="pass --mirror URL")


def build_and_import(driver: Driver, request: BuildRequest, output: OutputHandler, *, name: str, description: str,
                     make_tarball: Callable[[Path, Path, bool, Callable[[str], None]], None]) -> ImageInfo:
    """Import the tarball ``name`` of the cache (``request.options["cache"]``), or one ``make_tarball(work, tarball,
    zstd, say)`` makes in a temporary directory (then kept in the cache), and give it ``request.alias``.

    ``name`` stands for the recipe: a tarball is only taken from the cache when no one else could have
    put it there. The temporary tree is always deleted; an image that cannot get its aliases is deleted too.
    """
    import tempfile

    def say(line: str) -> None:
        output(f"==> {line}\n".encode())

    cache = Path(request.options["cache"]) if request.options.get("cache") else None
    zstd = shutil.which("zstd") is not None
    suffix = "tar.zst" if zstd else "tar.gz"
    cached = next((path for path in _cached(cache, name) if only_mine(path)), None)  # no one else's
    work = Path(tempfile.mkdtemp(prefix="cci-host-", dir=cache or _work_parent()))
    try:
        if cached is not None:
            say(f"using the cached {cached}")
            os.utime(cached)  # the newest tarball in the cache is the one last used
            tarball = cached
        else:
            tarball = work / f"image.{suffix}"
            make_tarball(work, tarball, zstd, say)
            if cache is not None:
                _sync(tarball)  # a crash after the rename leaves no cached tarball with holes
                tarball = tarball.replace(cache / f"{name}.{suffix}")
        say(f"importing it as {request.alias}")
        image = driver.import_image(tarball, description=description)  # interrupted: no new image
    finally:
        with ignoring_interrupts():  # a second Ctrl+C does not leave the tree behind
            _unmount_under(work)  # raises, keeping the tree, when something stays mounted
            shutil.rmtree(work)
    versioned = _versioned_alias(driver, request.alias, image.fingerprint)
    try:
        for alias in (versioned, request.alias):
            driver.tag_image(alias, image.fingerprint, description=description)
    except BaseException:
        if not image.aliases:  # imported by this build (an image it matched already had its aliases)
            _forget(driver, image)
        raise
    say(f"{request.alias} -> {versioned} ({image.fingerprint[:12]})")
    return image._replace(aliases=(*image.aliases, versioned, request.alias))


def configure(rootfs: Path, output: OutputHandler) -> None:
    """What :func:`customize` leaves to the cci image: the user's groups and sudoers file, the systemd units."""
    run_host_command(["chroot", str(rootfs), "usermod", "--append", "--groups", ",".join(contents.GROUPS),
                      contents.USER], output, "usermod")
    sudoers = rootfs / contents.SUDOERS_FILE.lstrip("/")
    (rootfs / "etc/sudoers.d/code").unlink(missing_ok=True)  # customize's name for the same line
    sudoers.write_text(contents.SUDOERS_LINE + "\n")
    sudoers.chmod(0o440)
    chroot = ["chroot", str(rootfs), "systemctl"]
    run_host_command([*chroot, "enable", *contents.ENABLED_UNITS], output, "systemctl enable")
    run_host_command([*chroot, "disable", *contents.DISABLED_UNITS], output, "systemctl disable")
    run_host_command([*chroot, "mask", *contents.MASKED_UNITS], output, "systemctl mask")


def install_ca_bundle(rootfs: Path, mode: str, host_bundle: Path | None = None) -> bytes | None:
    """With ``build`` or ``image``: the host's CA bundle replaces the tree's; returns the tree's own (or None)."""
    if mode == "none":
        return None
    target = rootfs / IMAGE_CA_BUNDLE
    original = target.read_bytes() if target.is_file() and not target.is_symlink() else b""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    target.write_bytes(_read_ca_bundle(host_bundle))
    target.chmod(0o644)
    return original


def remove_ca_bundle(rootfs: Path, mode: str, original: bytes | None, host_bundle: Path | None = None) -> None:
    """``build``: put the tree's own bundle back; ``image``: keep the host's, also where update-ca-certificates
    finds it again; ``none``: nothing."""
    if mode == "none" or original is None:
        return
    target = rootfs / IMAGE_CA_BUNDLE
    if mode == "build":
        target.unlink(missing_ok=True)
        if original:
            target.write_bytes(original)
            target.chmod(0o644)
        return
    target.unlink(missing_ok=True)
    target.write_bytes(_read_ca_bundle(host_bundle))
    target.chmod(0o644)
    place_bytes(rootfs, IMAGE_CA_COPY, _read_ca_bundle(host_bundle), 0o644)


def place_file(rootfs: Path, path: str, source: Path, mode: int) -> None:
    """Copy the host file ``source`` to ``path`` in the tree (owned by root, ``mode``), replacing what is there."""
    target = _inside(rootfs, path)
    target.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    os.chown(target, 0, 0)
    target.chmod(mode)


def place_bytes(rootfs: Path, path: str, data: bytes, mode: int) -> None:
    target = _inside(rootfs, path)
    target.unlink(missing_ok=True)
    target.write_bytes(data)
    target.chmod(mode)


def pack(work: Path, tarball: Path, zstd: bool, output: OutputHandler) -> None:
    """Pack ``metadata.yaml``, ``templates`` and ``rootfs`` of ``work`` as a unified image (zstd or gzip)."""
    members = ["metadata.yaml", "templates", "rootfs"]
    if zstd:
        run_host_command(["tar", "-C", str(work), "--numeric-owner", "-I", "zstd -T0 -3 -q", "-cf", str(tarball),
                          *members], output, "tar")
    else:
        run_host_command(["tar", "-C", str(work), "--numeric-owner", "-czf", str(tarball), *members], output, "tar")


def _inside(rootfs: Path, path: str) -> Path:
    """``path`` under ``rootfs``, its directories made; refuses a path leaving the tree or through a link."""
    relative = Path(path.lstrip("/"))
    if ".." in relative.parts or not relative.parts:
        raise CciError(f"{path!r} is not a path inside the image")
    directory = rootfs
    for part in relative.parts[:-1]:
        directory = directory / part
        if directory.is_symlink():
            raise CciError(f"{path!r}: {directory.relative_to(rootfs)} is a symbolic link in the image")
        directory.mkdir(mode=0o755, exist_ok=True)
    return rootfs / relative


def _read_ca_bundle(path: Path | None = None) -> bytes:
    path = path or HOST_CA_BUNDLE
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the host's CA bundle {path}: {exc.strerror}",
                         hint="install ca-certificates, or set [plugins.images] host_ca_bundle = \"none\"") from None


def build_log_path(alias: str) -> Path:
    """A new log file of a build of ``alias``, under cci's state directory."""
    from datetime import datetime, timezone

    from cci_core.api import state_dir

    directory = state_dir() / "logs"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return directory / f"build-{alias}-{stamp}.log"


def _cached(cache: Path | None, name: str) -> list[Path]:
    return [cache / f"{name}.{suffix}" for suffix in ("tar.zst", "tar.gz")] if cache else []


def _description(recipe: HostRecipe) -> str:
    tool = f", {recipe.tool} {recipe.tool_version}" if recipe.tool_version else ""
    return f"cci ({recipe.base.suite}, host build{tool})"


def _work_parent() -> str:
    """Where the temporary tree goes: /var/tmp (a rootfs of 2 GB does not belong in a tmpfs /tmp)."""
    return "/var/tmp" if os.path.isdir("/var/tmp") else "/tmp"


def _succeeds(argv: list[str]) -> bool:
    import subprocess

    return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}).returncode == 0


def mounts_under(directory: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``directory``, deepest first (from /proc/self/mountinfo)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    root = os.path.realpath(directory)
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")  # octal escapes such as \040 for a space
            if point == root or point.startswith(root + "/"):
                points.append(point)
    return sorted(points, key=lambda point: point.count("/"), reverse=True)


def _unmount_under(directory: Path) -> None:
    """Unmount what debootstrap or apt left mounted in the tree, so that deleting it cannot reach the host."""
    import subprocess

    for point in mounts_under(directory):
        subprocess.run(["umount", "--lazy", point], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = mounts_under(directory)
    if left:
        raise CciError(f"cannot unmount {left[0]}: the build tree {directory} is kept",
                       hint=f"unmount it ('umount -l {left[0]}') and delete {directory}")


def _sync(path: Path) -> None:
    with path.open("rb") as stream:
        os.fsync(stream.fileno())


def _versioned_alias(driver: Driver, alias: str, fingerprint: str) -> str:
    """``ALIAS-YYYYMMDD-HHMMSS``; when a build of the same second has it, with the fingerprint's first 12 digits."""
    versioned = f"{alias}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    taken = any(versioned in image.aliases and image.fingerprint != fingerprint for image in driver.list_images())
    return f"{versioned}-{fingerprint[:12]}" if taken else versioned


def _forget(driver: Driver, image: ImageInfo) -> None:
    """Delete an image that was imported but could not be aliased (a second Ctrl+C ignored meanwhile); never
    raises over the first error."""
    with ignoring_interrupts():
        try:
            driver.delete_image(image.fingerprint)
        except CciError:
            pass


def host_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror (as apt has it configured) when the host is Debian, else deb.debian.org."""
    from cci_builtin_plugins.images.debootstrap import DEFAULT_MIRROR

    deb822 = sources_dir / "sources.list.d/debian.sources"
    classic = sources_dir / "sources.list"
    try:
        if deb822.is_file():
            for line in deb822.read_text().splitlines():
                if line.startswith("URIs:") and len(line.split()) > 1:
                    return line.split()[1]
        elif classic.is_file():
            for line in classic.read_text().splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[0] == "deb" and "security" not in fields[1] \
                        and not fields[1].startswith("["):
                    return fields[1]
    except OSError:
        pass
    return DEFAULT_MIRROR


def settings_from(settings: Mapping[str, object]) -> tuple[ImageFetch, str]:
    """``[plugins.images]``'s fetch settings for a tool and the CA bundle mode (checked by the builder)."""
    version = str(settings.get("claude_version") or "latest")
    registry = settings.get("npm_registry")
    return ImageFetch(version, str(registry) if registry else None), str(settings.get("host_ca_bundle") or "none")
