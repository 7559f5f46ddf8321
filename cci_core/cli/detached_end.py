"""The detached process that carries on the end of a ``cci run``, or of an attached ephemeral session, after its cci
returned (save, delete).

``cci run`` returns as soon as its command has ended, the container has stopped and the
workspace guard has reported (see :meth:`SessionManager.finish
<cci_core.session.SessionManager.finish>`); the rest runs here. This process is started when the
end begins, as ``python -m cci_core.cli.detached_end`` in a session of its own (no terminal's
Ctrl+C or hangup reaches it), its output discarded. It reads the invocation's global flags and
the container's name from its standard input, loads the same config, plugins and driver meanwhile,
waits until the pipe closes (the caller released it, or died), then ends the session if its
``launcher`` label names this process. It works with the config the caller had loaded (and trusted)
before the command ran, never one read again: the agent may have rewritten the workspace's
``.cci.toml`` meanwhile. If this process dies first, the session stays ``ending``
under a dead launcher, and the next cci command ends it again
(:meth:`~cci_core.session.SessionManager.reconcile`).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NamedTuple

from cci_core.session_record import launcher_id

if TYPE_CHECKING:
    from cci_core.config import Config


class _Job(NamedTuple):
    config: Config
    name: str
    delete: bool | None


class DetachedEndProcess:
    """The parent's handle on one detached end (a :class:`~cci_core.session.DetachedEnd`)."""

    def __init__(self, config: Config, name: str, delete: bool | None) -> None:
        from cci_core.cli.detached_process import start

        self._process, self._pipe = start(__name__, _Job(config, name, delete))
        self.launcher = f"{launcher_id().rpartition(':')[0]}:{self._process.pid}"

    def release(self) -> None:
        try:
            self._pipe.close()
        except OSError:
            pass


def main() -> int:
    """The detached process: see the module's docstring."""
    from cci_core.cli.detached_process import load, read_job
    from cci_core.session import SessionManager

    job: _Job = read_job()
    plugins, driver = load(job.config)
    manager = SessionManager(job.config, driver, plugins, warn=lambda message: None)
    sys.stdin.buffer.read()  # until the caller lets go (or is gone)
    manager.carry_on_end(job.name, job.delete)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:  # nothing to tell anyone: the next command ends the session again
        code = 1
    sys.stdout.flush()
    os._exit(code)
