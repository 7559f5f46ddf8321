"""The detached process that makes a warm pool whole again after a launch took from it (or found it short):
``python -m cci_core.cli.pool_fill``, started as :mod:`.detached_process` says, with the invocation's config
and the pool's :class:`~cci_core.warm_pool.PoolTarget`. It runs
:meth:`~cci_core.session.SessionManager.fill_pool`; a failure goes to ``~/.cci/logs/pool.log``
(the launches then make their containers, as without a pool).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.warm_pool import PoolTarget


class _Job(NamedTuple):
    config: Config
    pool: PoolTarget


def start(config: Config, pool: PoolTarget) -> None:
    """Start the process for ``pool`` (it goes on alone)."""
    from cci_core.cli.detached_process import start

    _process, pipe = start(__name__, _Job(config, pool), background=True)
    try:
        pipe.close()
    except OSError:
        pass


def _log(message: str) -> None:
    import time

    from cci_core.layout import state_dir

    logs = state_dir() / "logs"
    try:
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(logs / "pool.log", "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")
    except OSError:
        pass


def main() -> int:
    """The detached process: see the module's docstring."""
    from cci_core.cli.detached_process import load, read_job
    from cci_core.errors import CciError
    from cci_core.session import SessionManager

    job: _Job = read_job()
    try:
        plugins, driver = load(job.config)
        SessionManager(job.config, driver, plugins, warn=_log).fill_pool(job.pool)
    except CciError as exc:
        _log(f"filling the warm pool for {job.pool.image!r} ({job.pool.policy}) failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException as exc:  # nobody to tell but the log
        _log(f"filling the warm pool failed: {exc!r}")
        code = 1
    sys.stdout.flush()
    os._exit(code)
