"""Unit tests for ``[limits]``: the values' checks, profiles, ``--limit``, deadlines and the Incus translation."""

from __future__ import annotations

import threading
import time

import pytest

from cci_core.config import Override
from cci_core.limits import (
    check_cpu,
    check_disk,
    check_duration,
    check_memory,
    deadline_of,
    overdue,
    parse_duration,
    parse_size,
    read_summary,
    summary,
)
from tests.unit.test_config import Layers, layers  # noqa: F401  (the fixture)


@pytest.mark.parametrize(("text", "size"), [("512MiB", 512 << 20), ("4GiB", 4 << 30), ("2GB", 2 * 10**9),
                                            ("1024", 1024), ("10B", 10)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["4 GiB", "4gib", "GiB", "-1GiB", "4.5GiB", "4Gi", ""])
def test_what_is_no_size(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(("text", "seconds"), [("8h", 8 * 3600), ("90m", 5400), ("1h30m", 5400), ("2d", 172800),
                                               ("45s", 45), ("1d2h3m4s", 93784)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("check", "good", "bad", "said"), [
    (check_memory, ["", "4GiB", "50%", "128MiB"], ["4 GiB", "0%", "101%", "1KiB", "lots"], "e.g. 4GiB or 50%"),
    (check_cpu, ["", "2", "0-3", "0,2", "1-1", "0-1,4"], ["0", "3-1", "two", "0-", "1.5"], "e.g. 2 (two CPUs)"),
    (check_disk, ["", "20GiB", "4GiB"], ["1GiB", "20 GiB", "big"], "e.g. 20GiB"),
    (check_duration, ["", "8h", "10s", "1h30m"], ["5s", "30m1h", "8 h", "8hours", "h"], "e.g. 8h"),
])
def test_each_key_is_checked_with_an_example(check, good, bad, said) -> None:  # type: ignore[no-untyped-def]
    assert [check(value) for value in good] == [None] * len(good)
    for value in bad:
        problem = check(value)
        assert problem is not None and said in problem and repr(value) in problem, (value, problem)


def test_a_bad_limit_in_a_file_is_one_line_with_its_place(layers: Layers) -> None:
    layers.write(layers.user, """
        [limits]
        cpu = "2"
        memory = "4 GB"
    """)
    error = layers.error()
    assert str(error).startswith("~/.config/cci/config.toml:3: limits.memory: '4 GB' is not a size")
    assert "\n" not in str(error)


def test_limits_merge_like_other_keys(layers: Layers) -> None:
    layers.write(layers.user, '[limits]\ncpu = "2"\nduration = "8h"\n')
    layers.write(layers.project, '[limits]\nmemory = "4GiB"\n')
    config = layers.load(overrides=[Override("limits.duration", "90m", "--limit")])
    assert (config.limits.cpu, config.limits.memory, config.limits.duration) == ("2", "4GiB", "90m")
    assert config.limits.processes == 10000 and config.limits.disk == "20GiB"
    assert config.source_of("limits.duration") == "--limit"


def test_a_profile_sets_limits_in_a_table_of_its_own(layers: Layers) -> None:
    layers.write(layers.user, """
        [limits]
        cpu = "1"
        [profiles.big]
        image = "cci-big"
        [profiles.big.limits]
        cpu = "0-3"
        processes = 500
    """)
    config = layers.load(profile="big")
    assert (config.limits.cpu, config.limits.processes, config.defaults.image) == ("0-3", 500, "cci-big")
    assert config.source_of("limits.cpu") == "profile big (~/.config/cci/config.toml:6)"
    assert layers.load().limits.cpu == "1"  # not selected: the file's own


def test_a_profile_limit_is_checked_and_unknown_keys_are_named(layers: Layers) -> None:
    layers.write(layers.user, """
        [profiles.big.limits]
        proceses = 50
    """)
    layers.load(profile="big")
    assert any("unknown key 'profiles.big.limits.proceses'" in warning
               and "did you mean 'profiles.big.limits.processes'" in warning for warning in layers.warnings)
    layers.write(layers.user, """
        [profiles.big.limits]
        duration = "forever"
    """)
    assert "profiles.big.limits.duration: 'forever' is not a duration" in str(layers.error(profile="big"))


def test_deadline_and_summary(layers: Layers) -> None:
    layers.write(layers.user, '[limits]\nduration = "15s"\ncpu = "2"\n')
    config = layers.load()
    assert deadline_of(config, now=1000.5) == 1015
    assert overdue(1015, now=1015) and not overdue(1015, now=1014.9) and not overdue(None)
    label = summary(config)
    assert label == "cpu=2 memory=50% processes=10000 disk=20GiB duration=15s save_size=2GiB"
    assert read_summary(label) == {"cpu": "2", "memory": "50%", "processes": 10000, "disk": "20GiB",
                                   "duration": "15s", "save_size": "2GiB"}
    assert deadline_of(layers.load(overrides=[Override("limits.duration", "", "--limit")])) is None


# -- the Incus translation --------------------------------------------------------------------------------------------


def limits_of(**values: object):  # type: ignore[no-untyped-def]
    from cci_core.config.schema import LimitsConfig

    return LimitsConfig()._replace(**values)


PROFILE_ROOT = {"root": {"type": "disk", "path": "/", "pool": "fast"}}


def test_limits_become_instance_keys_and_a_root_disk_on_the_profiles_pool() -> None:
    from cci_builtin_plugins.incus.limits import edit_limits

    body = {"config": {"user.cci.kind": "session", "limits.cpu": "4"}, "devices": {"eth0": {"type": "nic"}}}
    assert edit_limits(body, PROFILE_ROOT, limits_of(cpu="0-1", memory="512MiB", processes=50, disk="5GiB"))
    assert body["config"] == {"user.cci.kind": "session", "limits.cpu": "0-1", "limits.memory": str(512 << 20),
                              "limits.processes": "50"}
    assert body["devices"] == {"eth0": {"type": "nic"},
                               "root": {"type": "disk", "path": "/", "pool": "fast", "size": str(5 << 30)}}
    assert not edit_limits(body, PROFILE_ROOT, limits_of(cpu="0-1", memory="512MiB", processes=50, disk="5GiB"))


def test_a_limit_taken_off_is_removed_and_a_root_disk_is_never_made_smaller() -> None:
    from cci_builtin_plugins.incus.limits import edit_limits

    body = {"config": {"limits.cpu": "2", "limits.memory": "50%", "limits.processes": "50"},
            "devices": {"root": {"type": "disk", "path": "/", "pool": "fast", "size": str(20 << 30)}}}
    notes: list[str] = []
    assert edit_limits(body, PROFILE_ROOT, limits_of(cpu="", memory="", processes=0, disk="10GiB"), notes)
    assert body["config"] == {}
    assert body["devices"]["root"]["size"] == str(20 << 30)
    assert notes == ["its root disk stays at 20GiB: a disk is never made smaller (disk = '10GiB'); start a new "
                     "session for a smaller one"]
    assert edit_limits(body, PROFILE_ROOT, limits_of(disk="30GiB"))
    assert body["devices"]["root"]["size"] == str(30 << 30)
    assert edit_limits(body, PROFILE_ROOT, limits_of(disk=""))  # the pool's default again
    assert body["devices"]["root"] == {"type": "disk", "path": "/", "pool": "fast"}


# -- the deadline --------------------------------------------------------------------------------------------------


def test_sessions_past_their_deadline_count_as_ended_whoever_watches_them() -> None:
    from cci_core.driver import ContainerInfo
    from cci_core.session import SessionManager

    def info(name: str, status: str, **labels: str) -> ContainerInfo:
        return ContainerInfo(name, status, {"kind": "session", "workspace": "/w", "session": name, "state": "running",
                                            **labels}, "")

    past, future = str(int(time.time()) - 1), str(int(time.time()) + 3600)
    listing = [info("over", "running", deadline=past), info("not-yet", "running", deadline=future),
               info("none", "running"), info("stopped", "stopped", deadline=future),
               info("saved", "stopped", deadline=past, state="saved")]
    assert [entry.name for entry in SessionManager.ended(listing)] == ["over", "stopped"]


def test_the_container_is_stopped_at_the_deadline_and_not_after_the_block() -> None:
    from cci_core.limits import StopAtDeadline

    class Stoppable:
        def __init__(self) -> None:
            self.stopped = threading.Event()

        def exec(self, argv):  # type: ignore[no-untyped-def]
            raise AssertionError("not run")

        def stop(self, *, force: bool = False, timeout: int = 60) -> None:
            assert force
            self.stopped.set()

    due = Stoppable()
    with StopAtDeadline(due, int(time.time())) as deadline:
        assert due.stopped.wait(10)
    assert deadline.reached and deadline.passed
    spared = Stoppable()
    with StopAtDeadline(spared, int(time.time()) + 3600) as deadline, StopAtDeadline(spared, None) as never:
        pass
    assert not spared.stopped.wait(0.2)
    assert not deadline.reached and not deadline.passed and not never.reached and not never.passed


def test_the_limit_flag_names_itself_and_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from cci_core.cli.main import cli

    result = CliRunner().invoke(cli, ["--workspace", str(tmp_path), "--limit", "cpus=2", "config", "show"])
    assert result.exit_code == 2
    assert ("Invalid value for '--limit': unknown key 'cpus' (did you mean 'cpu'?): the keys are cpu, memory, "
            "processes, disk, duration, save_size") in result.output


def test_a_sessions_saves_are_bounded_by_the_save_size_it_started_under(layers: Layers) -> None:
    from cci_core.limits import labels_of, save_size_of

    layers.write(layers.user, '[limits]\nsave_size = "64MiB"\nduration = "1h"\n')
    started = labels_of(layers.load(), now=100)
    assert started["deadline"] == "3700" and "save_size=64MiB" in started["limits"]
    now = layers.load(overrides=[Override("limits.save_size", "1GiB", "--limit")])
    assert save_size_of(started, now) == 64 << 20  # whoever saves it
    assert save_size_of({}, now) == 1 << 30  # a container of an earlier release: this invocation's
    assert save_size_of({"limits": "save_size=lots"}, now) == 1 << 30
    unlimited = layers.load(overrides=[Override("limits.duration", "", "--limit")])
    assert labels_of(unlimited)["deadline"] == ""  # a saved container started again loses its old deadline
