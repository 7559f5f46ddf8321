"""The result of one ``cci doctor`` check: the :class:`Check` record, its statuses and their constructors.

A module of its own, importing nothing of cci's, so that the hook contract
(:mod:`cci_core.hookspecs`) can name it without importing the doctor, which
depends on the plugin manager, which imports the hook contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

OK = "ok"
WARN = "warn"
FAIL = "fail"
#: the statuses, from best to worst
STATUSES = (OK, WARN, FAIL)


class Check(NamedTuple):
    """The result of one check.

    :param name: short and stable, e.g. ``incus reachable``; unique in one run.
    :param status: ``ok``, ``warn`` (cci works, worse than it could) or ``fail`` (cci cannot work).
    :param detail: what was found.
    :param fix: for ``warn`` and ``fail``, what to do about it (a command to run, a setting to change).
    """

    name: str
    status: str
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> Check:
    """A passed check."""
    return Check(name, OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    """A check that found something cci works around, at a cost."""
    return Check(name, WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    """A check that found something which stops cci from working."""
    return Check(name, FAIL, detail, fix)


def skipped(names: Iterable[str], reason: str, fix: str) -> Check:
    """The one ``warn`` line standing for checks that were not made because something they need failed."""
    return warn("skipped", f"not checked because {reason}: {', '.join(names)}", fix)
