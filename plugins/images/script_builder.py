"""The ``script`` image builder: run a bash script as root in a container of the base image, then publish it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from cci_core.api import (
    BackendError,
    BuildRequest,
    CciError,
    Container,
    ContainerSpec,
    Driver,
    ImageBuilder,
    ImageFile,
    ImageInfo,
    OutputHandler,
)

#: seconds the build container may take to get an address and a default route
NETWORK_TIMEOUT = 60
#: a public name and address to tell "DNS is broken" from "no connectivity"
PROBE_NAME = "github.com"
PROBE_ADDRESS = "1.1.1.1"
SCRIPT_PATH = "/root/cci-build.sh"
BUILD_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


class ScriptBuilder(ImageBuilder):
    """Builds on any driver: create from the base, run the script, stop, publish, move the alias."""

    name = "script"
    summary = "run a build script in a container of the base image and publish the result"

    def __init__(self, files: tuple[ImageFile, ...] = (), properties: Mapping[str, str] | None = None) -> None:
        """``files`` (host files, e.g. a tool's binary) are copied in after the script; ``properties`` are
        added to the published image's."""
        self.files = files
        self.properties = dict(properties or {})

    def build(self, driver: Driver, request: BuildRequest, output: OutputHandler) -> ImageInfo:
        from cci_core.api import Kind, SessionRecord, launcher_id, wait_for_boot

        def say(line: str) -> None:
            output(f"==> {line}\n".encode())

        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        versioned = f"{request.alias}-{stamp}"
        name = f"cci-build-{uuid.uuid4().hex[:8]}"
        say(f"launching {name} from {request.base}")
        labels = SessionRecord(kind=Kind.BUILD, launcher=launcher_id()).to_labels()
        container = driver.create(ContainerSpec(name, request.base, labels=labels, config=driver.base_config))
        try:
            container.start()
            wait_for_boot(container)
            if not request.offline:
                self._prepare_network(container, say)
            say("running the build script")
            container.push_file(SCRIPT_PATH, request.script, mode=0o700)
            result = container.exec(["bash", SCRIPT_PATH], environment=BUILD_ENVIRONMENT, cwd="/root",
                                    stdout=output, stderr=output)
            if result.exit_code != 0:
                raise CciError(f"the build script failed with exit code {result.exit_code}")
            container.exec(["rm", "-f", SCRIPT_PATH])
            for file in self.files:
                say(f"copying {file.source} to {file.path}")
                container.exec(["rm", "-f", file.path])
                container.push_file(file.path, file.source.read_bytes(), mode=file.mode)
            say(f"stopping {name}")
            container.stop(timeout=120)
            say(f"publishing {versioned}")
            image = driver.publish(name, versioned, description=f"cci build of {request.alias} from {request.base}",
                                   properties=self.properties)
            driver.tag_image(request.alias, image.fingerprint, description=f"latest cci build: {versioned}")
            say(f"{request.alias} -> {versioned} ({image.fingerprint[:12]})")
            return image._replace(aliases=(*image.aliases, request.alias))
        finally:
            _discard(container)

    @staticmethod
    def _prepare_network(container: Container, say: Callable[[str], None]) -> None:
        """Wait for an address and a default route; fix DNS inside the container when only it is broken."""
        from cci_builtin_plugins.images import dns

        say("waiting for the network")
        waited = container.exec(["timeout", str(NETWORK_TIMEOUT), "sh", "-c",
                                 "until ip -4 route show default | grep -q .; do sleep 0.2; done"])
        if waited.exit_code != 0:
            raise BackendError(f"the build container got no network within {NETWORK_TIMEOUT} s",
                               hint="check the Incus network of the default profile ('cci doctor'), "
                                    "or build with --offline if the script needs no network")
        names = container.exec(["getent", "hosts", PROBE_NAME]).exit_code == 0
        addresses = names or container.exec(
            ["timeout", "5", "bash", "-c", f"</dev/tcp/{PROBE_ADDRESS}/53"]).exit_code == 0
        resolv_conf = container.pull_file("/etc/resolv.conf").decode(errors="replace")
        verdict = dns.judge(resolv_conf, names_resolve=names, addresses_reachable=addresses)
        if verdict.fix:
            say(f"DNS does not work ({verdict.reason}): writing public resolvers into the image")
            container.exec(["rm", "-f", "/etc/resolv.conf"])
            container.push_file("/etc/resolv.conf", dns.fixed_resolv_conf().encode(), mode=0o644)
        elif not addresses:
            say(f"no connectivity beyond the bridge ({verdict.reason}); the script runs anyway")


def _discard(container: Container) -> None:
    """Delete the build container, whatever happened; never raises over the build's own error."""
    try:
        if container.status() != "stopped":
            container.stop(force=True)
        container.delete()
    except CciError:
        pass
