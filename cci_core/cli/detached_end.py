"""The detached process that carries on the end of a ``cci run`` after it returned (save, delete).

``cci run`` returns as soon as its command has ended, the container has stopped and the
workspace guard has reported (see :meth:`SessionManager.finish
<cci_core.session.SessionManager.finish>`); the rest runs here. This process is started when the
end begins, as ``python -m cci_core.cli.detached_end`` in a session of its own (no terminal's
Ctrl+C or hangup reaches it), its output discarded. It reads the invocation's global flags and
the container's name from its standard input, loads the same config, plugins and driver meanwhile,
waits until the pipe closes (the caller released it, or died), then ends the session if its
``launcher`` label names this process. If this process dies first, the session stays ``ending``
under a dead launcher, and the next cci command ends it again
(:meth:`~cci_core.session.SessionManager.reconcile`).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import IO, NamedTuple

from cci_core.cli.options import GlobalOptions
from cci_core.session_record import launcher_id


class _Job(NamedTuple):
    options: GlobalOptions
    name: str
    delete: bool | None


class DetachedEndProcess:
    """The parent's handle on one detached end (a :class:`~cci_core.session.DetachedEnd`)."""

    def __init__(self, options: GlobalOptions, name: str, delete: bool | None) -> None:
        job = _Job(options._replace(env=dict(options.env) if options.env is not None else None,
                                    limit=dict(options.limit) if options.limit is not None else None), name, delete)
        self._process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
        self.launcher = f"{launcher_id().rpartition(':')[0]}:{self._process.pid}"
        assert self._process.stdin is not None
        self._pipe: IO[bytes] = self._process.stdin
        try:
            pickle.dump(job, self._pipe)
            self._pipe.flush()
        except OSError:  # it died at once: the session is ended again by the next command
            pass

    def release(self) -> None:
        try:
            self._pipe.close()
        except OSError:
            pass


def starter(options: GlobalOptions) -> Callable[[str, bool | None], DetachedEndProcess]:
    """The :attr:`~cci_core.session.SessionManager.detached_end` of an invocation with these global flags."""
    return lambda name, delete: DetachedEndProcess(options, name, delete)


def main() -> int:
    """The detached process: see the module's docstring."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    job: _Job = pickle.load(sys.stdin.buffer)
    from cci_core.cli.state import AppState
    from cci_core.session import SessionManager

    state = AppState(job.options)
    manager = SessionManager(state.config, state.driver, state.plugins, warn=lambda message: None)
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
