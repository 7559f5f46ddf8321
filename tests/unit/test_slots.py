"""Slot allocation: lowest free, explicit slots, and the atomic claim under races (with the fake driver)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cci_core.driver import ContainerSpec
from cci_core.errors import UsageError
from cci_core.naming import container_name, parse_name, workspace_id
from cci_core.slots import claim_slot, slot_claims, used_slots
from tests.fakes import FakeDriver


def make(driver: FakeDriver):
    return lambda name, slot: driver.create(ContainerSpec(name, "img", labels={"slot": str(slot)}))


def test_names_hash_the_real_path(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert workspace_id(link) == workspace_id(real)
    assert container_name(link, 3) == f"cci-{workspace_id(real)}-3"
    assert parse_name(container_name(real, 12)) == (workspace_id(real), 12)
    assert parse_name("cci-xyz-1") is None and parse_name("cci-0123abcd-0") is None
    with pytest.raises(ValueError):
        container_name(real, 0)


def test_lowest_free_slot_is_taken(tmp_path: Path) -> None:
    driver = FakeDriver(None)
    for slot in (1, 2, 4):
        make(driver)(container_name(tmp_path, slot), slot)
    make(driver)("cci-ffffffff-3", 3)  # another workspace's slot 3 does not count
    container = claim_slot(driver, tmp_path, make(driver))
    assert container.name == container_name(tmp_path, 3)
    assert used_slots(tmp_path, driver.containers) == {1, 2, 3, 4}


def test_explicit_busy_slot_is_a_usage_error(tmp_path: Path) -> None:
    driver = FakeDriver(None)
    make(driver)(container_name(tmp_path, 2), 2)
    with pytest.raises(UsageError, match=r"slot 2 of this workspace is busy: container cci-\w{8}-2 exists"):
        claim_slot(driver, tmp_path, make(driver), slot=2)
    assert claim_slot(driver, tmp_path, make(driver), slot=5).name == container_name(tmp_path, 5)


def test_no_cap_on_slots(tmp_path: Path) -> None:
    driver = FakeDriver(None)
    names = [claim_slot(driver, tmp_path, make(driver)).name for _ in range(25)]
    assert names[-1] == container_name(tmp_path, 25)


def test_racing_claims_get_distinct_slots(tmp_path: Path) -> None:
    driver = FakeDriver(None)
    barrier = threading.Barrier(10)
    results: list[str] = []

    def claim() -> None:  # every thread has the same empty listing (the slot lock is this user's: another
        barrier.wait()    # user's claims race by name alone)
        results.append(claim_slot(driver, tmp_path, make(driver), listing=[], claims=slot_claims(tmp_path)).name)

    threads = [threading.Thread(target=claim) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(container_name(tmp_path, slot) for slot in range(1, 11))


def test_an_explicit_slot_waits_for_the_end_at_work_on_its_container(tmp_path: Path) -> None:
    from cci_core.session_record import launcher_id

    driver = FakeDriver(None)
    name = container_name(tmp_path, 1)
    driver.create(ContainerSpec(name, "img", labels={"state": "ending", "launcher": launcher_id()}))
    threading.Timer(0.3, lambda: driver.containers.pop(name)).start()  # the end at work deletes it
    assert claim_slot(driver, tmp_path, make(driver), slot=1).name == name
    # one whose end no live process holds is busy at once (the next command's reconcile ends it)
    other = container_name(tmp_path, 2)
    driver.create(ContainerSpec(other, "img", labels={"state": "ending", "launcher": "another-boot:1"}))
    with pytest.raises(UsageError, match="slot 2 of this workspace is busy"):
        claim_slot(driver, tmp_path, make(driver), slot=2)


def test_a_launch_lists_the_containers_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open() lists them to finish ended sessions; the slot's claim takes that listing (a request less): a slot
    freed by that finishing is free, one taken since is found taken by its name. (The check of the mounts
    before the start lists them afresh: a session started meanwhile counts there.)"""
    import inspect

    from cci_core.session import LaunchRequest
    from tests.unit.test_lifecycle_hooks import recorded

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    sessions, _recorder = recorded(workspace)
    driver = sessions.driver
    listed: list[str] = []
    original = driver.list_containers
    monkeypatch.setattr(driver, "list_containers", lambda: listed.append(inspect.stack()[1].function) or original())
    first = sessions.open(LaunchRequest(workspace)).container
    assert listed == ["open", "other_workspaces"] and first.name == container_name(workspace, 1)
    taken_since = make(driver)(container_name(workspace, 2), 2)  # after the listing below, say
    listing = [info for info in original() if info.name == first.name]
    assert claim_slot(driver, workspace, make(driver), listing=listing, claims=slot_claims(workspace)).name == \
        container_name(workspace, 3)
    assert taken_since.name in driver.containers and len(listed) == 2
