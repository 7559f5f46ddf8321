"""The pure selection rules of ``cci image``: which images are cci's, what cleanup deletes and keeps."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cci_core.cli.image_cmd import created_at, human_size, is_cci_alias, newest_first, plan_cleanup, select_images
from cci_core.driver import ImageInfo


def image(name: str, created: str, *aliases: str) -> ImageInfo:
    """An image whose fingerprint starts with ``name`` (so tests can tell them apart)."""
    return ImageInfo(fingerprint=name.ljust(64, "0"), aliases=aliases or (name,), description="", created=created)


def names(images: tuple[ImageInfo, ...] | list[ImageInfo]) -> list[str]:
    return [found.fingerprint.rstrip("0") for found in images]


def kept(plan) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {found.fingerprint.rstrip("0"): reason for found, reason in plan.keep}


V1 = image("a1", "2026-01-01T00:00:00Z", "node-1")
V2 = image("b2", "2026-01-02T00:00:00Z", "node-2")
V3 = image("c3", "2026-01-03T00:00:00Z", "node-3")
V4 = image("d4", "2026-01-04T00:00:00Z", "node-4")


@pytest.mark.parametrize(("alias", "expected"), [
    ("cci", True), ("cci-rust", True), ("cci-", True), ("ccix", False), ("my-cci", False), ("CCI", False), ("", False),
])
def test_what_makes_a_cci_image(alias: str, expected: bool) -> None:
    assert is_cci_alias(alias) is expected


def test_keeps_the_newest_and_deletes_the_rest_newest_first() -> None:
    plan = plan_cleanup([V2, V4, V1, V3], "node-", keep=2)
    assert names(plan.delete) == ["b2", "a1"]
    assert kept(plan) == {"d4": "one of the 2 newest", "c3": "one of the 2 newest"}


@pytest.mark.parametrize(("keep", "deleted"), [(0, ["d4", "c3", "b2", "a1"]), (1, ["c3", "b2", "a1"]),
                                               (4, []), (10, [])])
def test_keep_bounds(keep: int, deleted: list[str]) -> None:
    plan = plan_cleanup([V1, V2, V3, V4], "node-", keep=keep)
    assert names(plan.delete) == deleted
    assert len(plan.delete) + len(plan.keep) == 4


def test_only_images_with_an_alias_starting_with_the_prefix_are_considered() -> None:
    unrelated = [image("e5", "2020-01-01T00:00:00Z", "python-1"), image("f6", "2020-01-01T00:00:00Z", "nodejs"),
                 ImageInfo("0" * 64, (), "", "2020-01-01T00:00:00Z")]
    plan = plan_cleanup([*unrelated, V1, V2], "node-", keep=1)
    assert names(plan.delete) == ["a1"]
    assert names([found for found, _ in plan.keep]) == ["b2"]


def test_the_image_aliased_cci_is_never_deleted() -> None:
    pinned = image("a1", "2026-01-01T00:00:00Z", "node-1", "cci")
    plan = plan_cleanup([pinned, V2, V3], "node-", keep=1)
    assert names(plan.delete) == ["b2"]
    assert kept(plan) == {"c3": "the newest", "a1": "the alias 'cci' points to it"}
    assert "a1" not in names(plan_cleanup([pinned], "node-", keep=0).delete)


def test_the_cci_alias_itself_matching_the_prefix_still_protects() -> None:
    default = image("a1", "2026-01-01T00:00:00Z", "cci")
    versions = image("b2", "2026-01-02T00:00:00Z", "cci-old")
    plan = plan_cleanup([default, versions], "cci", keep=0)
    assert names(plan.delete) == ["b2"]
    assert kept(plan) == {"a1": "the alias 'cci' points to it"}


def test_protected_images_count_in_the_ranking() -> None:
    newest_pinned = image("d4", "2026-01-04T00:00:00Z", "node-4", "cci")
    plan = plan_cleanup([V1, V2, V3, newest_pinned], "node-", keep=1)
    assert names(plan.delete) == ["c3", "b2", "a1"]


def test_an_image_also_aliased_outside_the_prefix_is_in_use_and_kept() -> None:
    shared = image("a1", "2026-01-01T00:00:00Z", "node-1", "stable", "lts")
    plan = plan_cleanup([shared, V2], "node-", keep=0)
    assert names(plan.delete) == ["b2"]
    assert kept(plan) == {"a1": "also aliased stable, lts"}


def test_ties_with_the_last_kept_image_are_all_kept() -> None:
    twin_a = image("b2", "2026-01-02T00:00:00Z", "node-2a")
    twin_b = image("bb", "2026-01-02T00:00:00.000Z", "node-2b")  # same instant, written differently
    plan = plan_cleanup([V1, twin_a, twin_b, V3], "node-", keep=2)
    assert names(plan.delete) == ["a1"]
    assert set(kept(plan)) == {"c3", "b2", "bb"}


def test_ties_below_the_cut_are_all_deleted() -> None:
    twin_a = image("a1", "2026-01-01T00:00:00Z", "node-1a")
    twin_b = image("aa", "2026-01-01T00:00:00Z", "node-1b")
    plan = plan_cleanup([twin_a, twin_b, V3], "node-", keep=1)
    assert set(names(plan.delete)) == {"a1", "aa"}
    assert names(plan.delete) == names(plan_cleanup([twin_b, V3, twin_a], "node-", keep=1).delete)  # stable order


def test_images_of_unknown_age_are_kept_and_do_not_take_a_place() -> None:
    unknown = image("e5", "not a date", "node-x")
    zero = image("f6", "0001-01-01T00:00:00Z", "node-y")  # Go's zero time: Incus's "unknown"
    plan = plan_cleanup([unknown, zero, V1, V2], "node-", keep=1)
    assert names(plan.delete) == ["a1"]
    assert kept(plan) == {"b2": "the newest", "e5": "unknown creation time", "f6": "unknown creation time"}


def test_time_order_follows_instants_not_text() -> None:
    nanoseconds = image("a1", "2026-01-01T00:00:00.123456789Z", "node-1")
    later_offset = image("b2", "2026-01-01T01:30:00+02:00", "node-2")  # 23:30 UTC the day before: older
    whole_second = image("c3", "2026-01-01T00:00:01Z", "node-3")
    assert names(newest_first([nanoseconds, later_offset, whole_second])) == ["c3", "a1", "b2"]
    assert created_at(nanoseconds) == datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
    assert created_at(image("x", "2026-01-01T00:00:00")) == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_negative_keep_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_cleanup([V1], "node-", keep=-1)


def test_list_selection() -> None:
    default = image("a1", "2026-01-01T00:00:00Z", "cci")
    rust = image("b2", "2026-01-02T00:00:00Z", "cci-rust", "rust")
    other = image("c3", "2026-01-03T00:00:00Z", "debian")
    bare = ImageInfo("d4".ljust(64, "0"), (), "", "2026-01-04T00:00:00Z")
    everything = [default, rust, other, bare]
    assert names(select_images(everything)) == ["b2", "a1"]
    assert names(select_images(everything, everything=True)) == ["d4", "c3", "b2", "a1"]
    assert names(select_images(everything, prefix="r")) == ["b2"]
    assert names(select_images(everything, everything=True, prefix="deb")) == ["c3"]


@pytest.mark.parametrize(("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                            (71006239, "67.7 MiB"), (3 * 1024**3, "3.0 GiB"), (2 * 1024**4, "2.0 TiB")])
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text
