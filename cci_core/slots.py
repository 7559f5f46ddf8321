"""Claim a slot for a workspace: the first free one, atomically.

A new container's claim is the creation of the container itself, named
``cci-<id>-<slot>``: the backend refuses a name that exists, so two launches racing
for one slot cannot both win, and a loser moves on to the next free slot. A
container taken from the warm pool keeps its own name and takes its slot as a
``slot`` label instead (:mod:`cci_core.warm_pool`), holding the workspace's slot lock
(:func:`slot_lock`), which counts the claims. A new container's claim settles under that
lock after its create (never holding it while Incus creates: parallel launches stay
parallel): if a label claim came since its listing and took the same slot, it gives the
slot back. Either claimer lists again only when the count moved since its listing. There
is no upper limit on slots.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from cci_core.driver import Container, ContainerExistsError, ContainerInfo, Driver
from cci_core.ends_at_work import wait_for_end
from cci_core.errors import UsageError
from cci_core.naming import container_name, parse_name, workspace_id


class SlotLock:
    """The workspace's slot lock, held: :attr:`claims` counts the slots ever claimed under it."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.claims = _read_count(fd)

    def claimed(self) -> None:
        """Count one more slot claimed (before the lock is let go)."""
        self.claims += 1
        os.pwrite(self._fd, f"{self.claims}\n".encode().ljust(21), 0)


def _lock_file(workspace: Path) -> Path:
    from cci_core.layout import state_dir

    return state_dir() / "slots" / workspace_id(workspace)


def _read_count(fd: int) -> int:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0


def slot_claims(workspace: Path) -> int:
    """How many slots of ``workspace`` were ever claimed (read before a listing a claim then relies on)."""
    try:
        fd = os.open(_lock_file(workspace), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return 0
    try:
        return _read_count(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def slot_lock(workspace: Path) -> Iterator[SlotLock]:
    """Hold the slot lock of ``workspace`` (this user's: :mod:`cci_core.host_lock`)."""
    from cci_core.host_lock import held

    with held(_lock_file(workspace)) as fd:
        yield SlotLock(fd)


def slot_holders(workspace: Path, containers: Iterable[str | ContainerInfo]) -> dict[int, str]:
    """The slots of ``workspace`` that ``containers`` (names, or listed containers) occupy, each with the name
    of a container holding it: by name, and by the ``slot`` label of a session taken from the warm pool."""
    from cci_core.session_record import SessionRecord

    ours, real = workspace_id(workspace), os.path.realpath(workspace)
    holders: dict[int, str] = {}
    for item in containers:
        name = item if isinstance(item, str) else item.name
        parsed = parse_name(name)
        if parsed and parsed.workspace_id == ours:
            holders[parsed.slot] = name
        elif not isinstance(item, str):
            record = SessionRecord.from_labels(item.labels)
            if record.is_session and record.workspace == real and record.slot:
                holders.setdefault(record.slot, name)
    return holders


def used_slots(workspace: Path, containers: Iterable[str | ContainerInfo]) -> set[int]:
    """The slots of ``workspace`` that ``containers`` occupy (see :func:`slot_holders`)."""
    return set(slot_holders(workspace, containers))


def claim_slot(
    driver: Driver,
    workspace: Path,
    create: Callable[[str, int], Container],
    *,
    slot: int | None = None,
    listing: Sequence[ContainerInfo] | None = None,
    claims: int | None = None,
) -> Container:
    """Create the container for ``slot``, or for the lowest free slot when ``slot`` is None or 0.

    The create is the claim among new containers (the backend refuses a name that exists). Then, under the
    slot lock, the claim counts, and a slot a warm-pool launch took by label meanwhile (the count moved since
    the listing) is given back: the container is deleted and the next slot tried (an explicit one is busy).

    :param create: makes the container for a name and slot; it must raise
        :class:`ContainerExistsError` when the name is taken (the driver's ``create`` does).
    :param listing: the containers, if just listed (else listed here), and ``claims``, :func:`slot_claims` as
        read before that listing. A slot taken by name since is tried and found taken; one freed since is
        passed by.
    :raises UsageError: an explicit slot is taken.
    """
    if listing is None or claims is None:
        claims = slot_claims(workspace)
        listing = driver.list_containers()
    holders = slot_holders(workspace, listing)
    if slot:
        name = holders.get(slot, container_name(workspace, slot))
        if name == container_name(workspace, slot):
            try:
                made = create(name, slot)
            except ContainerExistsError:
                pass
            else:
                holder = _settle(driver, workspace, made, slot, claims)
                if holder is None:
                    return made
                name = holder
        if wait_for_end(driver, name):  # an ending 'cci run' or session's, say
            return claim_slot(driver, workspace, create, slot=slot)
        raise UsageError(f"slot {slot} of this workspace is busy: container {name} exists",
                         hint=f"attach with 'cci attach {name}', or omit --slot to take a free one")
    taken = set(holders)
    candidate = 1
    while True:
        while candidate in taken:
            candidate += 1
        try:
            made = create(container_name(workspace, candidate), candidate)
        except ContainerExistsError:
            taken.add(candidate)  # another launch won this one a moment ago
            continue
        if _settle(driver, workspace, made, candidate, claims) is None:
            return made
        taken.add(candidate)


def _settle(driver: Driver, workspace: Path, made: Container, slot: int, claims: int) -> str | None:
    """Count the claim of ``slot`` by ``made``, unless a warm-pool launch took that slot by label since the
    listing (``claims``): then ``made`` is deleted, and the taker's name returned."""
    with slot_lock(workspace) as lock:
        holder = None
        if lock.claims != claims:
            holder = next((info.name for info in driver.list_containers() if info.name != made.name
                           and slot_holders(workspace, [info]).get(slot)), None)
        if holder is None:
            lock.claimed()
            return None
    made.delete()
    return holder
