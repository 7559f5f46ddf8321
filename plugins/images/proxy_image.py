"""The proxy image: a minimal Debian with squid, the container of a network plan's filtering proxy.

Built on the host like the cci image's host path (debootstrap from a package mirror, no image
server, no internet in any container), cached by recipe, imported as ``cci-proxy``
(``[network] proxy_image``). ``cci build proxy`` builds it; a launch that needs it and does
not find it builds it first (:func:`ensure_proxy_image`).

Squid at boot: the image's ``/etc/squid/squid.conf`` is not Debian's (which lets the local
networks through) but one that refuses every request, so a proxy container started before cci
put its configuration in can never let anything through. cci pushes its configuration
(:mod:`cci_builtin_plugins.incus.squid`) before the first start; squid's own unit then starts
it at every boot, after ``cci-proxy-prepare`` made what squid needs and the image cannot hold:
the proxy's CA (made in the container, its key never leaves it) and the database of the
certificates squid generates. The request log is rotated by size (a timer every minute:
``squid -k rotate`` past :data:`~cci_builtin_plugins.incus.squid.LOG_ROTATE_BYTES`, one old
file kept).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cci_core.api import BuildRequest, ImageBuilder
from cci_builtin_plugins.images import contents
from cci_builtin_plugins.images.debootstrap import (
    Recipe,
    metadata_yaml,
    prepare_system,
    run_host_command,
    write_image_files,
)
from cci_builtin_plugins.incus import squid

if TYPE_CHECKING:
    from cci_core.api import Driver, ImageInfo, OutputHandler

#: the alias of the proxy image unless ``[network] proxy_image`` says otherwise
PROXY_IMAGE = "cci-proxy"
#: bump when what this module puts in the tree changes
PROXY_BUILDER_VERSION = "1"
SUITE = "trixie"
PACKAGES = ("ca-certificates", "ifupdown", "isc-dhcp-client", "openssl", "squid-openssl", "systemd-sysv")
ENABLED_UNITS = ("squid.service", "cci-proxy-rotate.timer")

#: what squid runs with until cci puts in its own: nothing goes through
DENY_ALL_CONF = f"""# cci: squid's configuration until cci puts in the proxy's own: every request is refused
http_port {squid.LISTEN_ADDRESS}:{squid.LISTEN_PORT}
http_access deny all
cache deny all
visible_hostname cci-proxy
pid_filename {squid.PID_FILE}
shutdown_lifetime 1 seconds
access_log none
"""

PREPARE = "/usr/local/sbin/cci-proxy-prepare"
ROTATE = "/usr/local/sbin/cci-proxy-rotate"
PREPARE_SCRIPT = f"""#!/bin/sh
# cci: what squid needs before it starts: the proxy's CA (made here once: its key never leaves this
# container) and the database of the certificates squid generates
set -eu
umask 077
mkdir -p {squid.CONF_DIR}
if [ ! -s {squid.CA_KEY} ] || [ ! -s {squid.CA_CERT} ]; then
    rm -f {squid.CA_KEY} {squid.CA_CERT}
    {shlex.join(squid.ca_command())}
fi
chgrp proxy {squid.CA_KEY}
chmod 0640 {squid.CA_KEY}
chmod 0644 {squid.CA_CERT}
chmod 0755 {squid.CONF_DIR}
if [ ! -d {squid.CERT_DB} ]; then
    mkdir -p -m 0755 {squid.CERT_DB.rsplit("/", 1)[0]}
    rm -rf {squid.CERT_DB}.new
    {squid.CERTGEN} -c -s {squid.CERT_DB}.new -M 4MB >/dev/null
    chown -R proxy:proxy {squid.CERT_DB}.new
    mv {squid.CERT_DB}.new {squid.CERT_DB}
fi
"""
ROTATE_SCRIPT = f"""#!/bin/sh
# cci: rotate squid's logs when the request log is past {squid.LOG_ROTATE_BYTES} bytes (one old file is kept)
size=$(stat -c %s {squid.ACCESS_LOG} 2>/dev/null || echo 0)
if [ "$size" -gt {squid.LOG_ROTATE_BYTES} ]; then
    exec /usr/sbin/squid -k rotate
fi
"""
#: squid's unit: cci's preparation first (the unit's own ``squid -z`` parses the configuration, CA included)
SQUID_DROP_IN = f"""[Service]
ExecStartPre=
ExecStartPre={PREPARE}
ExecStartPre=/usr/sbin/squid --foreground -z
"""
ROTATE_SERVICE = f"""[Unit]
Description=cci: rotate the proxy's request log when it is large

[Service]
Type=oneshot
ExecStart={ROTATE}
"""
ROTATE_TIMER = """[Unit]
Description=cci: check the size of the proxy's request log every minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=10s

[Install]
WantedBy=timers.target
"""
#: the files cci puts in the tree: path -> (content, mode)
FILES = {
    squid.SQUID_CONF: (DENY_ALL_CONF, 0o644),
    PREPARE: (PREPARE_SCRIPT, 0o755),
    ROTATE: (ROTATE_SCRIPT, 0o755),
    "/etc/systemd/system/squid.service.d/cci.conf": (SQUID_DROP_IN, 0o644),
    "/etc/systemd/system/cci-proxy-rotate.service": (ROTATE_SERVICE, 0o644),
    "/etc/systemd/system/cci-proxy-rotate.timer": (ROTATE_TIMER, 0o644),
}


class ProxyRecipe(NamedTuple):
    """Everything that decides the proxy image's content."""

    base: Recipe

    def digest(self) -> str:
        import hashlib

        text = "\n".join([PROXY_BUILDER_VERSION, self.base.digest(), *ENABLED_UNITS, *contents.MASKED_UNITS,
                          *contents.FIRST_BOOT_WORK, *(f"{path}\n{mode:o}\n{text}" for path, (text, mode)
                                                       in sorted(FILES.items()))])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class ProxyImageBuilder(ImageBuilder):
    """The proxy image (squid on a minimal Debian) from a package mirror, built on the host and imported."""

    name = "proxy"
    summary = "the filtering proxy's image (squid on a minimal Debian), built on the host"

    def recipe(self, request: BuildRequest) -> ProxyRecipe:
        """The recipe of ``request`` (``base``: the suite; option ``mirror``)."""
        import platform

        return ProxyRecipe(Recipe(suite=request.base or SUITE, mirror=request.options.get("mirror") or "",
                                  packages=PACKAGES, architecture=platform.machine()))

    def build(self, driver: Driver, request: BuildRequest, output: OutputHandler) -> ImageInfo:
        """Build (or take from the cache) and import the image as ``request.alias``."""
        from cci_builtin_plugins.images.host_build import build_and_import, check_host_build

        check_host_build(request, "the proxy image")
        recipe = self.recipe(request)
        description = f"cci proxy ({recipe.base.suite}, squid)"
        return build_and_import(
            driver, request, output, name=f"proxy-{recipe.digest()}", description=description,
            make_tarball=lambda work, tarball, zstd, say: _make_tarball(work, tarball, request, recipe, description,
                                                                        zstd, say, output))


def _make_tarball(work: Path, tarball: Path, request: BuildRequest, recipe: ProxyRecipe, description: str,
                  zstd: bool, say: Callable[[str], None], output: OutputHandler) -> None:
    from cci_builtin_plugins.images.host_build import PROXY_VARIABLES, pack, place_bytes

    rootfs = work / "rootfs"
    base = recipe.base
    proxy = {name: os.environ[name] for name in PROXY_VARIABLES if name in os.environ}
    say(f"debootstrap {base.suite} with squid from {base.mirror} (a minute or two)")
    run_host_command(["debootstrap", "--variant=minbase", f"--include={','.join(base.packages)}", base.suite,
                      str(rootfs), base.mirror], output, "debootstrap", env=proxy)
    say("putting in cci's squid configuration (refusing everything until cci's own), units and scripts")
    for path, (text, mode) in FILES.items():
        place_bytes(rootfs, path, text.encode(), mode)
    prepare_system(rootfs, output)
    chroot = ["chroot", str(rootfs), "systemctl"]
    run_host_command([*chroot, "enable", *ENABLED_UNITS], output, "systemctl enable")
    run_host_command([*chroot, "mask", *contents.MASKED_UNITS], output, "systemctl mask")
    for command in contents.FIRST_BOOT_WORK:
        run_host_command(["chroot", str(rootfs), *command.split()], output, command)
    write_image_files(work, metadata_yaml(base, description, int(time.time()), builder="proxy",
                                          digest=recipe.digest()))
    say(f"packing the image ({'zstd' if zstd else 'gzip: zstd is not installed'})")
    pack(work, tarball, zstd, output)


def proxy_request(alias: str = PROXY_IMAGE, *, mirror: str | None = None, cache: str | None = None,
                  suite: str = SUITE) -> BuildRequest:
    """The request that builds the proxy image ``alias`` (the host's Debian mirror unless ``mirror``)."""
    from cci_builtin_plugins.images.host_build import host_mirror

    return BuildRequest(alias, suite, offline=True,
                        options={"mirror": mirror or host_mirror(), **({"cache": cache} if cache else {})})


def ensure_proxy_image(driver: Driver, alias: str, say: Callable[[str], None]) -> None:
    """Build the proxy image ``alias`` when the driver has no image by that name (saying so in one line).

    Needs root (the build does); the build's output goes to a log file, named in the error when it fails.
    """
    if driver.image_exists(alias):
        return
    from cci_core.api import CciError, UsageError
    from cci_builtin_plugins.images.host_build import build_log_path

    if os.geteuid() != 0:
        raise UsageError(f"the proxy image {alias} is missing, and building it needs root (debootstrap)",
                         hint=f"build it once: 'sudo cci build proxy --alias {alias}'")
    say(f"building the proxy image {alias} (once, about 90 s)")
    request = proxy_request(alias, cache=str(_cache_dir()))
    log = build_log_path(alias)
    with log.open("wb") as handle:
        try:
            ProxyImageBuilder().build(driver, request, handle.write)
        except CciError as exc:
            exc.message = f"building the proxy image {alias} failed: {exc.message}"
            exc.hint = f"{exc.hint}; the log is {log}" if exc.hint else f"the log is {log}"
            raise


def _cache_dir() -> Path:
    from cci_core.api import state_dir

    directory = state_dir() / "cache" / "images"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory

