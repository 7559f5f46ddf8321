"""A cci process that goes on after the command returns (:mod:`.detached_end`, :mod:`.pool_fill`): started in a
session of its own (no terminal's Ctrl+C or hangup reaches it), its output discarded, given its job (the
invocation's config and what to do) pickled on its standard input."""

from __future__ import annotations

import copyreg
import pickle
import signal
import subprocess
import sys
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.driver import Driver
    from cci_core.plugin_manager import Plugins


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    """Unpickles a read-only mapping of the config (pickle has no way of its own)."""
    return MappingProxyType(items)


def dump(job: object, stream: IO[bytes]) -> None:
    """Pickle ``job`` (a config in it: read-only mappings too) onto ``stream``, for :func:`read_job`."""
    pickler = pickle.Pickler(stream)
    pickler.dispatch_table = {**copyreg.dispatch_table,
                              MappingProxyType: lambda proxy: (_mapping_proxy, (dict(proxy),))}
    pickler.dump(job)


def start(module: str, job: object, *, background: bool = False) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start ``python -m module`` with ``job`` on its standard input; the process and the pipe, left open.
    ``background``: at the lowest CPU priority (``nice``), so that it never slows the command that started it."""
    import shutil

    nice = shutil.which("nice") if background else None
    process = subprocess.Popen([*((nice, "-n", "19") if nice else ()), sys.executable, "-m", module],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    assert process.stdin is not None
    try:
        dump(job, process.stdin)
        process.stdin.flush()
    except OSError:  # it died at once (what it was for is done again by a later command)
        pass
    return process, process.stdin


def read_job() -> Any:
    """In the detached process: ignore the signals a terminal or a closed pipe would send, and read the job."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    return pickle.load(sys.stdin.buffer)


def load(config: Config) -> tuple[Plugins, Driver]:
    """The plugins and the driver of ``config``, as the command that started this process had them."""
    from cci_core.plugin_manager import load_plugins

    plugins = load_plugins(config.plugins.disabled, warn=lambda message: None)
    return plugins, plugins.registries.drivers.get(config.defaults.driver)(config)
