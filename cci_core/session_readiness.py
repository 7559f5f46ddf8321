"""Waiting for a started container to be ready: for a session (basic.target) or for the whole boot."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cci_core.driver import Container

BOOT_TIMEOUT = 120  # seconds a session waits for the container to finish booting

#: inside the container: no systemd, nothing to wait for; else wait for systemd's socket to appear
_SYSTEMD_UP = "command -v systemctl >/dev/null || exit 0; until [ -S /run/systemd/private ]; do sleep 0.05; done; "
#: ... then for the boot to finish
_WAIT_FOR_BOOT = _SYSTEMD_UP + "systemctl is-system-running --wait >/dev/null"
#: ... then for basic.target, or for the boot to be over without it (a failed unit it needs)
_WAIT_FOR_SESSION = _SYSTEMD_UP + (
    "until systemctl is-active --quiet basic.target; do "
    "case $(systemctl is-system-running) in initializing|starting) sleep 0.05;; *) exit 0;; esac; done"
)


def wait_for_boot(container: Container) -> None:
    """Block until the container's init has finished booting (systemd reports running or degraded).

    Images without systemd have nothing to wait for. A boot that takes longer
    than :data:`BOOT_TIMEOUT` is not waited for further.
    """
    container.exec(["timeout", str(BOOT_TIMEOUT), "sh", "-c", _WAIT_FOR_BOOT])


def wait_for_session(container: Container) -> None:
    """Block until the container has booted as far as a session needs: systemd's basic.target is active.

    By then the file systems are mounted, systemd-tmpfiles has set up ``/tmp`` (it
    empties it, and the session's tmux keeps its socket there) and the sockets listen
    (D-Bus, Docker's); the rest of the boot (the network's DHCP, logind, ...) goes on
    while the tool starts. ``cci shell`` and ``cci attach`` use this; the rest waits for
    the whole boot (:func:`wait_for_boot`). Same timeout and images without systemd.
    """
    container.exec(["timeout", str(BOOT_TIMEOUT), "sh", "-c", _WAIT_FOR_SESSION])
