"""Claim a slot for a workspace: the first free ``cci-<id>-<slot>`` name, atomically.

The claim is the creation of the container itself: the backend refuses a name
that exists, so two launches racing for one slot cannot both win. A loser
moves on to the next free slot. There is no upper limit on slots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from cci_core.driver import Container, ContainerExistsError, Driver
from cci_core.ends_at_work import wait_for_end
from cci_core.errors import UsageError
from cci_core.naming import container_name, parse_name, workspace_id


def used_slots(workspace: Path, names: Iterable[str]) -> set[int]:
    """The slots of ``workspace`` that containers in ``names`` occupy."""
    ours = workspace_id(workspace)
    return {parsed.slot for parsed in map(parse_name, names) if parsed and parsed.workspace_id == ours}


def claim_slot(
    driver: Driver,
    workspace: Path,
    create: Callable[[str, int], Container],
    *,
    slot: int | None = None,
    names: Iterable[str] | None = None,
) -> Container:
    """Create the container for ``slot``, or for the lowest free slot when ``slot`` is None or 0.

    :param create: makes the container for a name and slot; it must raise
        :class:`ContainerExistsError` when the name is taken (the driver's ``create`` does).
    :param names: the containers' names, if just listed (else listed here): a slot taken since is tried
        and found taken, one freed since is passed by.
    :raises UsageError: an explicit slot is taken.
    """
    if slot:
        name = container_name(workspace, slot)
        try:
            return create(name, slot)
        except ContainerExistsError:
            if wait_for_end(driver, name):  # an ending 'cci run' or session's, say
                return claim_slot(driver, workspace, create, slot=slot)
            raise UsageError(
                f"slot {slot} of this workspace is busy: container {name} exists",
                hint=f"attach with 'cci attach {name}', or omit --slot to take a free one",
            ) from None
    taken = used_slots(workspace, (info.name for info in driver.list_containers()) if names is None else names)
    candidate = 1
    while True:
        while candidate in taken:
            candidate += 1
        try:
            return create(container_name(workspace, candidate), candidate)
        except ContainerExistsError:
            taken.add(candidate)  # another launch won this one a moment ago
