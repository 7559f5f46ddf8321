"""``cci build`` and ``cci build custom``: build images with the configured image builder."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cci_core.api import (
    BuildRequest,
    CciError,
    NotFoundError,
    UsageError,
    current_config,
    current_driver,
    current_plugins,
    interruptible,
    make_tool,
)
from cci_builtin_plugins.images import contents
from cci_builtin_plugins.images.debootstrap import DEFAULT_MIRROR, DEFAULT_SUITE

if TYPE_CHECKING:
    from cci_core.api import Driver, ImageInfo, OutputHandler

#: the alias ``cci build`` makes, and the base it starts from (the public image server)
CCI_IMAGE = "cci"
DEFAULT_BASE = "images:ubuntu/22.04"
BUILTIN_SCRIPT = Path(__file__).with_name("cci-image.sh")
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@click.group(invoke_without_command=True)
@click.option("--source", type=click.Choice(["auto", "server", "host"]), default="auto", show_default=True,
              help="server: from the image server (Ubuntu 22.04); host: everything fetched on the host "
                   "(debootstrap, needs root); auto: server when it answers, else host.")
@click.option("--alias", "alias", default=CCI_IMAGE, show_default=True, metavar="NAME",
              help="The alias the image gets (and NAME-YYYYMMDD-HHMMSS).")
@click.option("--force", is_flag=True, help="Rebuild even if the image exists.")
@click.option("--base", default=DEFAULT_BASE, show_default=True, metavar="IMAGE",
              help="Server path: the image to build from (a local alias, or images:<alias>).")
@click.option("--offline", is_flag=True, help="Server path: do not wait for or repair the network.")
@click.option("--suite", default=contents.SUITE, show_default=True, help="Host path: the Debian or Ubuntu release.")
@click.option("--mirror", metavar="URL",
              help="Host path: the package mirror [default: the host's Debian mirror, else deb.debian.org].")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Host path: keep the image tarball here; the same recipe is then imported again in seconds.")
@click.option("--if-changed", is_flag=True, help="Host path: keep an existing image built from the same recipe.")
@click.pass_context
def build(ctx: click.Context, source: str, alias: str, force: bool, base: str, offline: bool, suite: str,
          mirror: str | None, cache: Path | None, if_changed: bool) -> None:
    """Build the cci image (Docker, Node.js, npm, Claude Code, gh, git, tmux, build tools).

    Two paths install the same list (docs/images.md): from the public image
    server (Ubuntu 22.04, the build container downloads), or with everything
    fetched on the host (Debian trixie by debootstrap, Claude Code from the
    npm registry; needs root). The image is published as ALIAS-YYYYMMDD-HHMMSS
    and ALIAS moved to it; a failed build leaves no image and no build
    container or tree. Settings: [plugins.images] claude_version,
    npm_registry, host_ca_bundle.
    """
    if ctx.invoked_subcommand is not None:
        return
    _check_alias(alias)
    # connect first: the first request may start cci again (the Incus driver does, under sg, for a
    # login that lacks the Incus group), and the server probe below must not print its choice twice
    current_driver().server_info()
    if source == "auto":
        from cci_builtin_plugins.images.source import choose_source

        source, reason = choose_source()
        click.echo(f"building {alias} from the {'image server' if source == 'server' else 'host'}: {reason}",
                   err=True)
    if source == "server":
        _build_from_server(BuildRequest(alias, base, BUILTIN_SCRIPT.read_bytes(), offline=offline), force)
        return
    _build_on_host(alias, suite, mirror, cache, force=force, if_changed=if_changed)


def _build_from_server(request: BuildRequest, force: bool) -> None:
    """The server path: the built-in script in a container, then the tool's files fetched on the host."""
    from cci_builtin_plugins.images.host_build import settings_from
    from cci_builtin_plugins.images.script_builder import ScriptBuilder
    from cci_core.api import tool_version_property

    if str(current_config().plugin_settings("images").get("builder", "script")) != "script":
        run_build(request, force=force)  # a plugin's builder: it puts the tool in itself
        return
    if not force and current_driver().image_exists(request.alias):  # checked before any download
        raise UsageError(f"image {request.alias!r} exists already", hint="add --force to rebuild it")
    if ":" not in request.base and not current_driver().image_exists(request.base):
        raise NotFoundError(f"base image {request.base!r} not found",
                            hint="build it first ('cci build'), or pick one from 'cci image list'")
    fetch, _ca_bundle = settings_from(current_config().plugin_settings("images"))
    tool = make_tool(current_plugins().registries, current_config())
    version = tool.image_version(fetch)
    files = tool.image_files(version, fetch, lambda line: click.echo(f"==> {line}")) if version else ()
    builder = ScriptBuilder(files, {tool_version_property(tool.name): version} if version else {})
    run_build(request, force=force, builder=lambda driver, output: builder.build(driver, request, output))


def _build_on_host(alias: str, suite: str, mirror: str | None, cache: Path | None, *, force: bool,
                   if_changed: bool) -> None:
    """The host path: the configured tool's fetch settings, the recipe check, the build."""
    from cci_builtin_plugins.images.host_build import HostImageBuilder, host_mirror, settings_from

    fetch, ca_bundle = settings_from(current_config().plugin_settings("images"))
    tool = make_tool(current_plugins().registries, current_config())
    builder = HostImageBuilder(tool, fetch, ca_bundle)
    options = {"mirror": mirror or host_mirror(), **({"cache": str(cache.resolve())} if cache else {})}
    request = BuildRequest(alias, suite, offline=True, options=options)
    recipe = builder.recipe(request)
    if if_changed and not force:
        if _up_to_date(current_driver(), alias, recipe.digest()):
            return
        force = True
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    run_build(request, force=force, builder=lambda driver, output: builder.build(driver, request, output,
                                                                                       recipe))


@build.command()
@click.argument("name")
@click.option("--script", "script", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bash script run as root in the build container.")
@click.option("--base", default=CCI_IMAGE, show_default=True, metavar="IMAGE", help="Image to build from.")
@click.option("--force", is_flag=True, help="Rebuild even if the image exists.")
@click.option("--offline", is_flag=True, help="Do not wait for or repair the network (the script needs none).")
def custom(name: str, script: Path, base: str, force: bool, offline: bool) -> None:
    """Build image NAME by running SCRIPT on top of BASE (default: the cci image)."""
    _check_alias(name)
    try:
        content = script.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the build script {script}: {exc.strerror}") from None
    run_build(BuildRequest(name, base, content, offline=offline), force=force)


@build.command()
@click.argument("name")
@click.option("--suite", default=DEFAULT_SUITE, show_default=True, help="Debian or Ubuntu release to install.")
@click.option("--mirror", default=DEFAULT_MIRROR, show_default=True, help="Package mirror to install from.")
@click.option("--include", "packages", metavar="PKG,...", help="Packages to install (default: what cci needs).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Keep the image tarball here; the same recipe is then imported again in seconds.")
@click.option("--force", is_flag=True, help="Rebuild even if the image exists.")
@click.option("--if-changed", is_flag=True, help="Keep an existing image built from the same recipe.")
def base(name: str, suite: str, mirror: str, packages: str | None, cache: Path | None, force: bool,
         if_changed: bool) -> None:
    """Build base image NAME on the host with debootstrap: no image server needed (needs root).

    Then 'cci build --base NAME' or 'cci build custom ... --base NAME' build on it.
    """
    from cci_builtin_plugins.images.debootstrap import recipe_from

    _check_alias(name)
    options = {"mirror": mirror, **({"packages": packages} if packages else {}),
               **({"cache": str(cache.resolve())} if cache else {})}
    request = BuildRequest(name, suite, offline=True, options=options)
    if if_changed and not force:
        if _up_to_date(current_driver(), name, recipe_from(request).digest()):
            return
        force = True
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    run_build(request, force=force, builder_name="debootstrap")


@build.command()
@click.option("--alias", "alias", default="cci-proxy", show_default=True, metavar="NAME",
              help="The alias the image gets (and NAME-YYYYMMDD-HHMMSS); [network] proxy_image names it.")
@click.option("--suite", default="trixie", show_default=True, help="The Debian release to install.")
@click.option("--mirror", metavar="URL",
              help="The package mirror [default: the host's Debian mirror, else deb.debian.org].")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Keep the image tarball here; the same recipe is then imported again in seconds.")
@click.option("--force", is_flag=True, help="Rebuild even if the image exists.")
@click.option("--if-changed", is_flag=True, help="Keep an existing image built from the same recipe.")
def proxy(alias: str, suite: str, mirror: str | None, cache: Path | None, force: bool, if_changed: bool) -> None:
    """Build the image of the filtering proxy (squid on a minimal Debian) on the host (needs root).

    The proxy network mode runs one container of it per network plan. A launch
    that needs it and does not find it builds it first; this builds it ahead,
    or again (docs/images.md).
    """
    from cci_builtin_plugins.images.proxy_image import ProxyImageBuilder, proxy_request

    _check_alias(alias)
    request = proxy_request(alias, mirror=mirror, cache=str(cache.resolve()) if cache else None, suite=suite)
    builder = ProxyImageBuilder()
    if if_changed and not force:
        if _up_to_date(current_driver(), alias, builder.recipe(request).digest()):
            return
        force = True
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    run_build(request, force=force, builder=lambda driver, output: builder.build(driver, request, output))


def run_build(request: BuildRequest, *, force: bool, builder_name: str | None = None,
              builder: Callable[[Driver, OutputHandler], ImageInfo] | None = None) -> None:
    """Build with ``builder``, or the named (or configured) one, streaming to the terminal and a log file."""
    driver = current_driver()
    alias, base = request.alias, request.base
    if not force and driver.image_exists(alias):
        raise UsageError(f"image {alias!r} exists already", hint="add --force to rebuild it")
    if builder is None:
        name = builder_name or str(current_config().plugin_settings("images").get("builder", "script"))
        if name == "script" and ":" not in base and not driver.image_exists(base):
            raise NotFoundError(f"base image {base!r} not found",
                                hint="build it first ('cci build'), or pick one from 'cci image list'")
        registered = current_plugins().registries.image_builders.get(name)()
        builder = lambda driver, output: registered.build(driver, request, output)  # noqa: E731
    log = _log_path(alias)
    with log.open("wb") as handle:
        def output(chunk: bytes) -> None:
            handle.write(chunk)
            handle.flush()
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()

        try:
            with interruptible():  # SIGTERM and SIGHUP clean up as Ctrl+C does: no tree, container or image left
                image = builder(driver, output)
        except CciError as exc:  # the same kind of error (and exit code), saying what failed and where the log is
            exc.message = f"building {alias} failed: {exc.message}"
            exc.hint = f"{exc.hint}; the log is {log}" if exc.hint else f"the log is {log}"
            raise
    click.echo(f"built {alias} ({image.fingerprint[:12]}); log: {log}", err=True)


def _up_to_date(driver: Driver, alias: str, digest: str) -> bool:
    """Whether ``alias`` names an image built from the recipe ``digest`` (said on stderr when it does)."""
    existing = [image for image in driver.list_images() if alias in image.aliases]
    if existing and existing[0].properties.get("cci.recipe") == digest:
        click.echo(f"{alias} is up to date ({existing[0].fingerprint[:12]})", err=True)
        return True
    return False


def _check_alias(name: str) -> None:
    if not _ALIAS.match(name):
        raise UsageError(f"{name!r} is not a valid image name", hint="use letters, digits, '.', '-' and '_'")


def _log_path(alias: str) -> Path:
    from cci_builtin_plugins.images.host_build import build_log_path

    return build_log_path(alias)
