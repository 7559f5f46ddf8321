"""The warm pool with the fake driver: what a launch takes and what it never takes, slots by label, the refill,
what cci clean removes. (Against the real Incus: tests/integration/test_warm_pool.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cci_core.config import Override, load_config
from cci_core.driver import ContainerSpec
from cci_core.naming import container_name
from cci_core.plugin_manager import load_plugins
from cci_core.session import LaunchRequest, SessionManager
from cci_core.session_record import launcher_id
from cci_core.slots import claim_slot, slot_claims, used_slots
from cci_core.warm_pool import PoolTarget, pooled, ready, stale, take
from tests.fakes import FakeDriver
from tests.unit.test_saved_sessions import Plugin

#: the launcher label of a process that does not run (this boot, a pid above any pid_max)
GONE = f"{launcher_id().rpartition(':')[0]}:4999999"


def pool_manager(workspace: Path, size: int = 2, *extra: object) -> tuple[SessionManager, FakeDriver, list[PoolTarget]]:
    """A session manager with a pool of ``size`` on the fake driver; its refills are recorded, not started."""
    config = load_config(workspace, environ={}, overrides=[Override("defaults.driver", "fake", "test"),
                                                           Override("tool.name", "demo", "test"),
                                                           Override("defaults.image", "img", "test"),
                                                           Override("pool.size", size, "test")])
    plugins = load_plugins(entry_points=False, extra=[("demo", Plugin()), *((f"x{i}", p) for i, p in enumerate(extra))])
    driver = FakeDriver(config)
    driver.publish("base", "img")  # (the image's fingerprint names what the pool holds)
    sessions = SessionManager(config, driver, plugins)
    refills: list[PoolTarget] = []
    sessions.refill_pool = refills.append
    return sessions, driver, refills


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return workspace


def filled(workspace: Path, size: int = 2, *extra: object) -> tuple[SessionManager, FakeDriver, PoolTarget]:
    """A manager whose pool was filled by the refill a first (cold) launch asked for; that launch's container
    deleted again."""
    sessions, driver, refills = pool_manager(workspace, size, *extra)
    container, _ctx = sessions.launch(LaunchRequest(workspace, kind="run"))
    assert not container.name.startswith("cci-pool-") and len(refills) == 1  # none ready: made, and a refill asked
    container.delete()
    sessions.fill_pool(refills[0])
    return sessions, driver, refills[0]


def test_a_launch_takes_a_ready_container_and_configures_it_running(workspace: Path) -> None:
    sessions, driver, target = filled(workspace)
    assert len(ready(driver.list_containers(), target)) == 2
    container, ctx = sessions.launch(LaunchRequest(workspace))
    assert container.name.startswith("cci-pool-") and getattr(container, "warm_starts", 0) == 1
    labels = container.labels()
    assert labels["kind"] == "session" and labels["state"] == "running" and labels["pool"] == "taken"
    assert labels["workspace"] == str(workspace.resolve()) and labels["slot"] == "1" and ctx.slot == 1
    assert any(mount.device == "workspace" and mount.source == workspace.resolve()
               for mount in container.host_mounts())
    assert len(ready(driver.list_containers(), target)) == 1


def test_persistent_launches_and_explicit_slots_never_take_from_the_pool(workspace: Path) -> None:
    sessions, driver, target = filled(workspace)
    persistent, _ctx = sessions.launch(LaunchRequest(workspace, persistent=True))
    slotted, _ctx = sessions.launch(LaunchRequest(workspace, slot=5))
    assert persistent.name == container_name(workspace, 1) and slotted.name == container_name(workspace, 5)
    assert len(ready(driver.list_containers(), target)) == 2


def test_another_key_image_or_a_warming_one_is_never_taken(workspace: Path) -> None:
    sessions, driver, target = filled(workspace)
    names = [info.name for info in ready(driver.list_containers(), target)]
    driver.get(names[0]).set_labels({"pool-key": "0" * 16})  # made for another image, policy, user or limits
    driver.get(names[1]).set_labels({"pool": "warming"})
    driver.publish("rebuilt", "img")  # the alias names another image now
    container, _ctx = sessions.launch(LaunchRequest(workspace))
    assert not container.name.startswith("cci-pool-")


def test_racing_launches_never_share_a_container_and_get_distinct_slots(workspace: Path) -> None:
    sessions, driver, target = filled(workspace, 3)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def launch() -> None:
        barrier.wait()
        results.append(sessions.launch(LaunchRequest(workspace, kind="run"))[0].name)

    threads = [threading.Thread(target=launch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 8 and sum(name.startswith("cci-pool-") for name in results) == 3
    slots = [driver.get(name).labels()["slot"] for name in results]
    assert sorted(map(int, slots)) == list(range(1, 9))


def test_a_pooled_slot_counts_for_a_cold_claim_whose_listing_is_older(workspace: Path) -> None:
    sessions, driver, _target = filled(workspace)
    claims, listing = slot_claims(workspace), driver.list_containers()  # as open() reads them
    pooled_session, _ctx = sessions.launch(LaunchRequest(workspace))
    assert pooled_session.labels()["slot"] == "1" and slot_claims(workspace) == claims + 1
    made = claim_slot(driver, workspace, lambda name, slot: driver.create(ContainerSpec(name, "img")),
                      listing=listing, claims=claims)
    assert made.name == container_name(workspace, 2)  # the stale listing had slot 1 free: listed again
    assert used_slots(workspace, driver.list_containers()) == {1, 2}


def test_an_explicit_slot_held_by_a_pooled_session_is_busy(workspace: Path) -> None:
    from cci_core.errors import UsageError

    sessions, _driver, _target = filled(workspace)
    pooled_session, _ctx = sessions.launch(LaunchRequest(workspace))
    with pytest.raises(UsageError, match=f"slot 1 of this workspace is busy: container {pooled_session.name}"):
        sessions.launch(LaunchRequest(workspace, slot=1))


def test_a_plugins_instance_config_makes_a_container_for_the_launch(workspace: Path) -> None:
    from tests.unit.test_lifecycle_hooks import Recorder

    sessions, driver, target = filled(workspace, 2, Recorder())
    before = {info.name for info in ready(driver.list_containers(), target)}
    container, _ctx = sessions.launch(LaunchRequest(workspace))
    assert not container.name.startswith("cci-pool-")  # security.nesting might need a start
    assert len(ready(driver.list_containers(), target)) == 1 and not before <= set(driver.containers)  # one deleted


def test_a_failed_start_of_a_taken_container_deletes_it(workspace: Path) -> None:
    from cci_core import hookimpl

    class Refuses:
        armed = False

        @hookimpl
        def cci_inject_credentials(self, ctx, container):  # type: ignore[no-untyped-def]
            if self.armed:
                raise RuntimeError("no")

    refuses = Refuses()
    sessions, driver, target = filled(workspace, 2, refuses)
    refuses.armed = True
    with pytest.raises(RuntimeError):
        sessions.launch(LaunchRequest(workspace))
    assert len(ready(driver.list_containers(), target)) == 1 and len(driver.containers) == 1


def test_the_refill_makes_the_pool_whole_and_removes_a_surplus(workspace: Path) -> None:
    sessions, driver, target = filled(workspace, 3)
    sessions.launch(LaunchRequest(workspace, kind="run"))
    assert len(pooled(driver.list_containers(), target)) == 2
    sessions.fill_pool(target)
    assert len(pooled(driver.list_containers(), target)) == 3
    stopped = driver.get(ready(driver.list_containers(), target)[0].name)
    stopped.state = "stopped"  # (a reboot, say)
    sessions.fill_pool(target)
    assert stopped.name not in driver.containers and len(pooled(driver.list_containers(), target)) == 3
    smaller, _driver, _refills = pool_manager(workspace, 1)
    smaller.driver = driver
    smaller.fill_pool(target)
    assert len(pooled(driver.list_containers(), target)) == 1


def test_a_whole_pool_asks_for_no_refill_until_a_launch_takes_one(workspace: Path) -> None:
    sessions, driver, refills = pool_manager(workspace, 1)
    sessions.launch(LaunchRequest(workspace, kind="run"))
    sessions.fill_pool(refills[0])
    taken, _ctx = sessions.launch(LaunchRequest(workspace, kind="run"))
    assert taken.name.startswith("cci-pool-") and len(refills) == 2
    persistent = sessions.launch(LaunchRequest(workspace, persistent=True))
    assert persistent and len(refills) == 2  # (no pool for it: nothing asked)


def test_clean_removes_stale_pool_containers_and_with_pool_all_of_this_users(workspace: Path) -> None:
    sessions, driver, target = filled(workspace, 4)
    first, second, third, fourth = (driver.get(info.name) for info in ready(driver.list_containers(), target))
    first.state = "stopped"
    second.set_labels({"pool": "warming", "launcher": GONE})
    third.set_labels({"version": "0.0.1"})
    assert {info.name for info, _why in stale(driver, driver.list_containers())} == {first.name, second.name,
                                                                                     third.name}
    plan = sessions.cleanup()
    assert len(plan.pool) == 3 and all(line.endswith(": delete") for line in plan.lines())
    sessions.clean(plan)
    assert set(driver.containers) == {fourth.name}
    fourth.set_labels({"uid": "4242"})  # another user's
    assert not sessions.cleanup(pool=True)
    fourth.set_labels({"uid": str(__import__("os").getuid())})
    sessions.clean(sessions.cleanup(pool=True))
    assert not driver.containers


def test_a_pool_container_taken_meanwhile_is_not_removed(workspace: Path) -> None:
    sessions, driver, target = filled(workspace, 1)
    plan = sessions.cleanup(pool=True)
    taken, _ctx = sessions.launch(LaunchRequest(workspace))
    sessions.clean(plan)
    assert taken.name in driver.containers and taken.status() == "running"


def test_a_mount_whose_source_is_a_link_never_reaches_a_running_container(workspace: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm container mounts what it is configured with at once: its sources are checked before (as before a
    start), never only after."""
    from cci_core import hookimpl
    from cci_core.context import Mount
    from cci_core.errors import CciError
    from tests.fakes import FakeContainer

    secret = tmp_path / "secret"
    secret.mkdir()
    link = workspace / "data"

    class Mounts:
        @hookimpl
        def cci_mounts(self, ctx):  # type: ignore[no-untyped-def]
            return [Mount("data", link, "/data")] if link.is_symlink() else []

    sessions, driver, _target = filled(workspace, 1, Mounts())
    link.symlink_to(secret)  # (an agent of another session of the workspace, say)
    configured: list[list[str]] = []
    original = FakeContainer.configure
    monkeypatch.setattr(FakeContainer, "configure", lambda self, config, mounts, network=None: (
        configured.append([mount.device for mount in mounts]), original(self, config, mounts, network))[1])
    with pytest.raises(CciError, match="link"):
        sessions.launch(LaunchRequest(workspace))
    assert not any("data" in devices for devices in configured)


def test_a_lowered_size_asks_for_a_refill_that_removes_the_surplus(workspace: Path) -> None:
    sessions, driver, target = filled(workspace, 3)
    smaller, _driver, refills = pool_manager(workspace, 1)
    smaller.driver = driver
    smaller.launch(LaunchRequest(workspace, kind="run"))  # takes one of 3: 2 left, 1 wanted
    assert refills == [target]
    smaller.fill_pool(target)
    assert len(pooled(driver.list_containers(), target)) == 1


def test_a_ready_container_gone_since_the_listing_is_passed_by(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    _sessions, driver, target = filled(workspace)
    listing = driver.list_containers()
    gone, kept = ready(listing, target)
    driver.containers.pop(gone.name)  # (taken and ended by a launch of another workspace, say)
    monkeypatch.setattr(random, "shuffle", lambda items: items.sort(key=lambda info: info.name != gone.name))
    taken = take(driver, workspace, target, lambda slot: {"kind": "run", "slot": str(slot)}, listing,
                 slot_claims(workspace))
    assert taken is not None and taken.name == kept.name


def test_an_explicit_slot_taken_by_label_after_the_listing_is_given_back(workspace: Path) -> None:
    from cci_core.errors import UsageError

    sessions, driver, _target = filled(workspace)
    claims, listing = slot_claims(workspace), driver.list_containers()
    pooled_session, _ctx = sessions.launch(LaunchRequest(workspace))  # slot 1, by label
    before = set(driver.containers)
    with pytest.raises(UsageError, match=f"slot 1 of this workspace is busy: container {pooled_session.name}"):
        claim_slot(driver, workspace, lambda name, slot: driver.create(ContainerSpec(name, "img")), slot=1,
                   listing=listing, claims=claims)
    assert set(driver.containers) == before  # the container made for it was deleted again
