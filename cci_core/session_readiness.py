"""When a started container is ready: the one check ``cci run``, ``cci shell`` and ``cci attach`` share.

Ready means booted as far as a command or a session needs: with systemd as init, its
``basic.target`` is active (the file systems are mounted, ``/tmp`` is set up, the sockets
listen); and the network the policy gives is configured, that is, a default IPv4 route
through an interface that has an IPv4 address, unless the container has no network
interface at all (a policy or profile that gives none). The rest of the boot (logind,
the Docker daemon...) goes on. The check runs inside the container, as one exec that
polls the guest's own state every 50 ms until it holds or its deadline passes, and then
says what was missing.

Image builders and ``cci container launch`` wait for the whole boot instead
(:func:`wait_for_boot`).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from cci_core.errors import BackendError

if TYPE_CHECKING:
    from cci_core.driver import Container

BOOT_TIMEOUT = 120  # seconds wait_for_boot waits for the whole boot
#: seconds a launch waits for the container to be ready by default (``[readiness] timeout``)
READY_TIMEOUT = 60
#: the check's exit code for "not ready by the deadline" (its last line says what was missing)
_NOT_READY = 3

#: inside the container: no systemd, nothing to wait for; else wait for systemd's socket, then the boot's end
_WAIT_FOR_BOOT = ("command -v systemctl >/dev/null || exit 0; until [ -S /run/systemd/private ]; do sleep 0.05; "
                  "done; systemctl is-system-running --wait >/dev/null")

#: the readiness check: ``sh -c READY_CHECK sh SECONDS [ROOT]`` (ROOT: where /proc and /sys are, for tests)
READY_CHECK = r"""
R=${2-}
systemd() {
    [ -d "$R/run/systemd/system" ] && return 0
    case $(readlink "$R/proc/1/exe" 2>/dev/null) in */systemd) return 0;; esac
    return 1
}
has_ipv4() {
    if command -v ip >/dev/null 2>&1; then
        [ -n "$(ip -4 -o addr show dev "$1" scope global 2>/dev/null)" ]
        return
    fi
    # without ip(8): the route the kernel adds for an address's subnet (a_: sh shares the callers' variables)
    while read -r a_dev a_dest a_gateway _; do
        [ "$a_dev" = "$1" ] && [ "$a_dest" != 00000000 ] && [ "$a_gateway" = 00000000 ] && return 0
    done < "$R/proc/net/route"
    return 1
}
network() {
    nics=
    for path in "$R"/sys/class/net/*; do
        [ -e "$path/ifindex" ] && [ "${path##*/}" != lo ] && nics="${nics:+$nics }${path##*/}"
    done
    [ -n "$nics" ] || return 0  # no network interface: nothing to wait for
    while read -r dev dest _; do
        if [ "$dest" = 00000000 ]; then
            has_ipv4 "$dev" && return 0
            echo "the network: $dev has a default route but no IPv4 address"
            return
        fi
    done < "$R/proc/net/route"
    for nic in $nics; do
        if has_ipv4 "$nic"; then
            echo "the network: no default route (interfaces: $nics)"
            return
        fi
    done
    echo "the network: no IPv4 address on $nics (no DHCP lease yet?)"
}
missing() {
    if systemd; then
        if [ ! -S "$R/run/systemd/private" ]; then
            echo "systemd (not started yet)"
            return
        fi
        if ! systemctl is-active --quiet basic.target; then
            case $(systemctl is-system-running 2>/dev/null) in
            initializing|starting) echo "systemd's basic.target (still booting)"; return;;
            esac  # else the boot is over without it (a unit it needs failed): nothing more to wait for
        fi
    fi
    network
}
end=$(( $(date +%s) + $1 + 1 ))  # (whole seconds: it waits from $1 to $1 + 1 s)
while :; do
    what=$(missing)
    [ -z "$what" ] && exit 0
    [ "$(date +%s)" -lt "$end" ] || { echo "$what"; exit 3; }
    sleep 0.05
done
"""


class Readiness(str, enum.Enum):
    """What a launch does about its container's readiness."""

    REQUIRED = "required"  # wait; not ready by the deadline fails the launch (cci run, cci run --prompt)
    WANTED = "wanted"  # wait; not ready by the deadline: a warning, and the session goes on (cci shell, attach)
    SKIPPED = "skipped"  # do not wait (cci run --no-wait)


class NotReadyError(BackendError):
    """A started container was not ready by the deadline; the message says what was missing."""


def check_ready(container: Container, timeout: int = READY_TIMEOUT) -> str | None:
    """Wait up to ``timeout`` seconds for the container to be ready (see the module); what was still missing then,
    or None once it is ready. A container that stops meanwhile is a :class:`~cci_core.errors.BackendError`."""
    result = container.exec(["sh", "-c", READY_CHECK, "sh", str(max(timeout, 0))])
    if result.exit_code == 0:
        return None
    lines = result.stdout.strip().splitlines()
    if result.exit_code == _NOT_READY and lines:
        return lines[-1]
    raise BackendError(f"cannot tell whether {container.name} is ready: the check exited with {result.exit_code}"
                       + (f" ({result.stderr.strip().splitlines()[-1]})" if result.stderr.strip() else ""))


def wait_ready(container: Container, timeout: int = READY_TIMEOUT) -> None:
    """Block until the container is ready; a :class:`NotReadyError` naming what was missing after ``timeout`` s."""
    missing = check_ready(container, timeout)
    if missing is not None:
        raise not_ready(container.name, timeout, missing)


def not_ready(name: str, timeout: int, missing: str) -> NotReadyError:
    """The error for container ``name``, still missing ``missing`` (as :func:`check_ready` says) after ``timeout``."""
    return NotReadyError(f"{name} was not ready after {timeout} s: {missing}",
                         hint="check the network policy's bridge (its DHCP) and the image's DHCP client; "
                              "[readiness] timeout waits longer, 'cci run --no-wait' does not wait")


def wait_for_boot(container: Container) -> None:
    """Block until the container's init has finished booting (systemd reports running or degraded).

    Images without systemd have nothing to wait for. A boot that takes longer
    than :data:`BOOT_TIMEOUT` is not waited for further.
    """
    container.exec(["timeout", str(BOOT_TIMEOUT), "sh", "-c", _WAIT_FOR_BOOT])
