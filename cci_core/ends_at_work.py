"""Sessions whose end is at work elsewhere: a detached process saves and deletes them after their ``cci run`` or
``cci shell`` returned (see :meth:`SessionManager.finish <cci_core.session.SessionManager.finish>`'s ``detach``).

What needs that end done waits for it: an explicit ``--slot`` for its container's name, a resume for the
workspace's save."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cci_core.backoff import Backoff
from cci_core.errors import NotFoundError
from cci_core.session_record import SessionRecord, State, launcher_alive

if TYPE_CHECKING:
    from cci_core.driver import ContainerInfo, Driver

#: how long a command waits for an end at work (a save of a large home takes a while)
ENDING_WAIT = 60.0


def at_work(record: SessionRecord) -> bool:
    """Whether a live process is ending this session now."""
    return record.state is State.ENDING and launcher_alive(record.launcher or "")


def wait_for_end(driver: Driver, name: str, timeout: float = ENDING_WAIT) -> bool:
    """Wait while a live process ends container ``name`` (up to ``timeout``); whether the container is gone."""
    backoff = Backoff(timeout, first=0.05)
    while True:
        try:
            record = SessionRecord.from_labels(driver.get(name).labels())
        except NotFoundError:
            return True
        if not at_work(record) or not backoff.pause():
            return False


def workspace_ends(containers: Iterable[ContainerInfo], workspace: Path) -> list[str]:
    """The containers of ``workspace`` (its real path) whose end is at work."""
    real = str(workspace.resolve())
    return [info.name for info in containers
            if (record := SessionRecord.from_labels(info.labels)).workspace == real and at_work(record)]
