"""The warm pool (``[pool] size``): containers created and started ahead of time, for ephemeral launches to take.

A pool container is made by :meth:`Driver.warm <cci_core.driver.Driver.warm>`: the image, the
driver's base config, the network policy's network and ``[limits]``, nothing of any workspace,
no credentials. It is labelled ``kind=pool`` with a :func:`pool key <pool_key>` (what it was made
for: driver, image, policy and network, base config, limits, host user, cci version) and the
fingerprint of its image, and goes ``warming`` -> ``ready`` once booted.

A launch takes a ready one of its own key and image by one compare-and-set of its labels (two
launches never get one container), claiming its slot by label under the workspace's slot lock
(:mod:`cci_core.slots`); it then configures it as a new container (the mounts go in while it runs)
and starts the session in it. The container keeps its ``cci-pool-*`` name. A detached process
(:mod:`cci_core.cli.pool_fill`) makes the pool whole again afterwards, one process per key at a time.

What ``cci clean`` removes (:func:`stale`): pool containers stopped, warming under a process that
is gone, of another cci version, or of an image its alias no longer names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from cci_core.digests import sha256
from cci_core.driver import Container, ContainerInfo, ContainerSpec, Driver
from cci_core.session_record import Kind, launcher_id, launcher_alive

#: the ``user.cci.pool`` label: where a pool container is (absent on every other container)
WARMING, READY, TAKEN = "warming", "ready", "taken"
NAME_PREFIX = "cci-pool-"


class PoolTarget(NamedTuple):
    """What a pool is kept for: everything a launch must share with a container it takes."""

    key: str  # :func:`pool_key`
    image: str  # the alias (or name) a launch creates from
    fingerprint: str  # the image it names now
    network: str | None  # the network policy's network (None: the driver's default)
    policy: str  # the network policy's name


def _version() -> str:
    from cci_core import __version__

    return str(__version__)


def pool_key(driver: Driver, image: str, policy: str, network: str | None, limits: str, uid: int) -> str:
    """16 hex digits naming what a pool container was made for (see the module's docstring)."""
    facts = {"driver": driver.name, "image": image, "policy": policy, "network": network,
             "config": dict(sorted(driver.base_config.items())), "limits": limits, "uid": uid,
             "container_uid": driver.container_uid, "version": _version()}
    return sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def is_pool(labels: Mapping[str, str]) -> bool:
    """Whether labels mark a pool container not taken yet."""
    return labels.get("kind") == Kind.POOL.value


def is_mine(labels: Mapping[str, str]) -> bool:
    """Whether labels mark a pool container made for this host user (the only ones a launch of theirs takes)."""
    return is_pool(labels) and labels.get("uid") == str(os.getuid())


def _of(info: ContainerInfo, target: PoolTarget) -> bool:
    labels = info.labels
    return is_pool(labels) and labels.get("pool-key") == target.key and \
        labels.get("pool-image") == target.fingerprint


def ready(listing: Sequence[ContainerInfo], target: PoolTarget) -> list[ContainerInfo]:
    """The ready containers of ``target`` in ``listing``."""
    return [info for info in listing if _of(info, target) and info.labels.get("pool") == READY
            and info.status == "running"]


def pooled(listing: Sequence[ContainerInfo], target: PoolTarget) -> list[ContainerInfo]:
    """The containers of ``target`` in ``listing`` that are or will be ready (warming under a live process)."""
    return [info for info in listing if _of(info, target) and info.status == "running" and (
        info.labels.get("pool") == READY
        or (info.labels.get("pool") == WARMING and launcher_alive(info.labels.get("launcher", ""))))]


def take(driver: Driver, workspace: Path, target: PoolTarget, labels: Callable[[int], Mapping[str, str]],
         listing: Sequence[ContainerInfo], claims: int | None = None) -> Container | None:
    """Take a ready container of ``target`` for a session of ``workspace`` (None: none is ready).

    ``labels(slot)``: the session's labels for the slot it gets, set in the same compare-and-set that takes the
    container. ``listing``: the containers as just listed (none ready there: nothing is asked of the backend),
    and ``claims``: :func:`~cci_core.slots.slot_claims` read before it (a slot claimed since: listed again).
    """
    import random

    from cci_core.errors import NotFoundError
    from cci_core.slots import slot_lock, used_slots

    if not ready(listing, target):
        return None
    with slot_lock(workspace) as lock:
        if claims != lock.claims:
            listing = driver.list_containers()
        candidates = ready(listing, target)
        random.shuffle(candidates)  # launches at the same moment try different ones first
        taken = used_slots(workspace, listing)
        slot = next(number for number in range(1, len(taken) + 2) if number not in taken)
        for info in candidates:
            expected = {"kind": Kind.POOL.value, "pool": READY, "pool-key": target.key}
            try:
                container = driver.get(info.name)
                if container.compare_and_set_labels(expected, {**labels(slot), "pool": TAKEN}):
                    lock.claimed()
                    return container
            except NotFoundError:
                continue  # gone since the listing (taken and ended by a launch elsewhere, removed): not to be had
    return None


def warm_one(driver: Driver, target: PoolTarget, wait_until_booted: Callable[[Container], None]) -> Container:
    """Make one container of ``target``: warming, started, booted, then ready. A failure deletes it again."""
    me = launcher_id()
    spec = ContainerSpec(f"{NAME_PREFIX}{os.urandom(4).hex()}", target.image, config=driver.base_config, labels={
        "kind": Kind.POOL.value, "pool": WARMING, "pool-key": target.key, "pool-image": target.fingerprint,
        "launcher": me, "network": target.policy, "version": _version(), "image": target.image,
        "uid": str(os.getuid())})
    container = driver.warm(spec, target.network)
    try:
        wait_until_booted(container)
        if not container.compare_and_set_labels({"pool": WARMING, "launcher": me}, {"pool": READY}):
            raise RuntimeError(f"{container.name} was taken over while it warmed")
    except BaseException:
        _discard(container)
        raise
    return container


def _discard(container: Container) -> None:
    from cci_core.session import SessionManager

    SessionManager.discard(container)


def surplus(listing: Sequence[ContainerInfo], target: PoolTarget, size: int) -> list[ContainerInfo]:
    """Ready containers of ``target`` beyond ``size`` (the size was lowered)."""
    return ready(listing, target)[size:] if len(pooled(listing, target)) > size else []


def remove(driver: Driver, info: ContainerInfo) -> bool:
    """Delete a pool container that no launch has taken (a compare-and-set first); whether it was removed."""
    from cci_core.errors import CciError

    try:
        container = driver.get(info.name)
        if not container.compare_and_set_labels({"kind": Kind.POOL.value, "pool": info.labels.get("pool", "")},
                                                {"pool": TAKEN, "launcher": launcher_id()}):
            return False
    except CciError:
        return False
    _discard(container)
    return True


def stale(driver: Driver, listing: Sequence[ContainerInfo]) -> Iterator[tuple[ContainerInfo, str]]:
    """The pool containers no launch will take, each with why (see the module's docstring)."""
    images: dict[str, str | None] = {}
    for info in listing:
        labels = info.labels
        if not is_pool(labels) or labels.get("pool") not in (WARMING, READY):
            continue
        if info.status != "running":
            yield info, f"a warm-pool container, {info.status}"
        elif labels.get("pool") == WARMING and not launcher_alive(labels.get("launcher", "")):
            yield info, "a warm-pool container whose warming process is gone"
        elif labels.get("version") != _version():
            yield info, f"a warm-pool container of cci {labels.get('version') or '(unknown)'}"
        else:
            image = labels.get("image", "")
            if image not in images:
                images[image] = driver.image_fingerprint(image)
            if images[image] != labels.get("pool-image"):
                yield info, f"a warm-pool container of an earlier image {image!r}"
