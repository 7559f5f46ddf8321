"""``[limits]`` in cci's terms: sizes, CPU counts or sets, durations; a session's deadline and its message.

The checks here are the config's (``schema.LimitsConfig``): each answers one line
naming what is wrong and an example. The driver turns the values into its own
settings (for Incus: ``plugins/incus/limits.py``); the core records them on the
container, with the deadline a ``[limits] duration`` gives (see docs/sessions.md,
*Limits*).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Config(Protocol):
    """What the functions here read of a :class:`cci_core.config.Config` (its ``[limits]``; no import: the schema
    imports this module)."""

    @property
    def limits(self) -> Any: ...


class Container(Protocol):
    """What the functions here need of a :class:`cci_core.driver.Container` (no import: see :class:`Config`)."""

    def exec(self, argv: Sequence[str]) -> Any: ...

    def stop(self, *, force: bool = False, timeout: int = 60) -> None: ...

#: size units, as Incus writes them (``kB``... powers of 1000, ``KiB``... powers of 1024)
UNITS = {"": 1, "B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SIZE = re.compile(r"(\d{1,15})([A-Za-z]*)\Z")
_PERCENT = re.compile(r"(\d{1,3})%\Z")
_CPU_SET = re.compile(r"\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*\Z")
_DURATION = re.compile(r"(?:(\d{1,4})d)?(?:(\d{1,5})h)?(?:(\d{1,6})m)?(?:(\d{1,7})s)?\Z")

#: the least memory a session may be given: systemd, tmux and a shell boot in it, hardly more
MIN_MEMORY = 128 << 20
#: the smallest root disk: on btrfs the limit counts the image's files too, and a limit below what the root holds
#: leaves Incus unable to write the container's own configuration (it cannot start, nor be changed back)
MIN_DISK = 4 << 30
#: the shortest session
MIN_DURATION = 10
#: the smallest bound of a save
MIN_SAVE = 1 << 20
#: the exit code of a ``cci run`` its duration ended (as timeout(1))
TIMEOUT_EXIT = 124


def parse_size(text: str) -> int:
    """Bytes of a size such as ``512MiB``, ``4GiB`` or ``2GB`` (ValueError if it is none)."""
    match = _SIZE.match(text)
    if not match or match.group(2) not in UNITS:
        raise ValueError(f"{text!r} is not a size")
    return int(match.group(1)) * UNITS[match.group(2)]


def _size_problem(text: str, minimum: int, example: str) -> str | None:
    try:
        size = parse_size(text)
    except ValueError:
        return (f"{text!r} is not a size: write a number and a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), "
                f"e.g. {example}")
    if size < minimum:
        return f"{text!r} is too small: give at least {format_size(minimum)}, e.g. {example}"
    return None


def format_size(size: int) -> str:
    """``size`` bytes in the largest binary unit that divides it (``4GiB``)."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]}{unit}"
    return f"{size}B"


def check_memory(text: str) -> str | None:
    """``""`` (no limit), a size of at least :data:`MIN_MEMORY`, or a percentage of the host's memory (1%-100%)."""
    if not text:
        return None
    percent = _PERCENT.match(text)
    if percent:
        return None if 1 <= int(percent.group(1)) <= 100 else f"{text!r}: a percentage is 1% to 100%, e.g. 4GiB or 50%"
    return _size_problem(text, MIN_MEMORY, "4GiB or 50%")


def check_cpu(text: str) -> str | None:
    """``""`` (all), a count of CPUs (``2``), or a set of CPU numbers (``0-3``, ``0,2``; a single one: ``1-1``)."""
    if not text:
        return None
    example = "2 (two CPUs) or 0-3 (CPUs 0 to 3)"
    if text.isascii() and text.isdigit():
        return None if 1 <= int(text) <= 4096 else f"{text!r}: a count of CPUs is 1 to 4096, e.g. {example}"
    if not _CPU_SET.match(text):
        return f"{text!r} is neither a count of CPUs nor a set of them: write e.g. {example}"
    for part in text.split(","):
        first, _, last = part.partition("-")
        if last and int(last) < int(first):
            return f"{text!r}: the range {part} goes down: write the lower CPU first, e.g. {example}"
    return None


def check_disk(text: str) -> str | None:
    """``""`` (the storage pool's default) or a size of at least :data:`MIN_DISK`."""
    return _size_problem(text, MIN_DISK, "20GiB") if text else None


def check_save_size(text: str) -> str | None:
    """A size of at least :data:`MIN_SAVE`."""
    return _size_problem(text, MIN_SAVE, "2GiB")


def parse_duration(text: str) -> int:
    """Seconds of a duration such as ``90m``, ``8h``, ``1h30m``, ``2d``, ``45s`` (ValueError if it is none)."""
    match = _DURATION.match(text)
    if not text or not match:
        raise ValueError(f"{text!r} is not a duration")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def check_duration(text: str) -> str | None:
    """``""`` (no limit) or a duration of at least :data:`MIN_DURATION` seconds."""
    if not text:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError:
        return (f"{text!r} is not a duration: write days, hours, minutes and seconds in that order, "
                "e.g. 8h, 90m or 1h30m")
    return None if seconds >= MIN_DURATION else f"{text!r} is too short: give at least {MIN_DURATION}s, e.g. 8h"


def session_duration(config: Config) -> int | None:
    """The longest a session of ``config`` may run, in seconds (``[limits] duration``; None: no limit)."""
    text = config.limits.duration
    return parse_duration(text) if text else None


def deadline_of(config: Config, now: float | None = None) -> int | None:
    """When a session started now must end (seconds since the epoch; None: no limit)."""
    duration = session_duration(config)
    if duration is None:
        return None
    return int(now if now is not None else time.time()) + duration


def overdue(deadline: int | None, now: float | None = None) -> bool:
    """Whether a session's ``deadline`` has passed."""
    return deadline is not None and (now if now is not None else time.time()) >= deadline


def ended_by_duration(name: str, record: Any = None, outcome: str = "") -> str:
    """The line saying that the session in ``name`` was ended by its ``[limits] duration`` (the duration read from
    its :class:`~cci_core.session_record.SessionRecord`, when given), and what became of it (``outcome``)."""
    duration = read_summary(getattr(record, "limits", None) or "").get("duration")
    limit = f" ([limits] duration = {duration!r})" if duration else ""
    outcome = outcome or "the session was ended (saved, then deleted unless persistent)"
    return f"{name} reached its time limit{limit}: {outcome}"


def iso_time(seconds: int) -> str:
    """A time in seconds since the epoch as ISO 8601, UTC (``2026-12-03T20:45:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def summary(config: Config) -> str:
    """The limits a session of ``config`` runs under, as one label value (``cpu=2 memory=4GiB ...``; what was set)."""
    limits = config.limits
    values = {"cpu": limits.cpu, "memory": limits.memory, "processes": str(limits.processes or ""),
              "disk": limits.disk, "duration": limits.duration, "save_size": limits.save_size}
    return " ".join(f"{key}={value}" for key, value in values.items() if value)


def read_summary(text: str) -> dict[str, Any]:
    """The limits a :func:`summary` label gives, as an object (``processes`` a number); unset ones left out."""
    result: dict[str, Any] = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if sep and key in ("cpu", "memory", "processes", "disk", "duration", "save_size"):
            result[key] = int(value) if key == "processes" and value.isdigit() else value
    return result


def save_size_of(labels: Mapping[str, str], config: Config) -> int:
    """The bound of a save of the session whose container has ``labels``, in bytes: the ``save_size`` it was started
    under (whoever saves it), else ``config``'s."""
    recorded = read_summary(labels.get("limits") or "").get("save_size")
    try:
        return parse_size(recorded) if recorded else parse_size(config.limits.save_size)
    except ValueError:  # a label of another release
        return parse_size(config.limits.save_size)


def labels_of(config: Config, now: float | None = None) -> dict[str, str]:
    """The labels recording the limits of a session started now: ``limits``, and ``deadline`` when there is one
    (an empty one when there is none: a saved container started again loses its old deadline)."""
    deadline = deadline_of(config, now)
    return {"limits": summary(config), "deadline": "" if deadline is None else str(deadline)}


#: the systemd unit inside that powers a container off at its deadline
TIMER_UNIT = "cci-deadline"


def arm_poweroff(container: Container, deadline: int, now: float | None = None) -> str | None:
    """Have the container power itself off at ``deadline`` (a systemd timer inside, for when no cci process is
    there to end it; the agent, root inside, can cancel it: the host's side stays the rule); None, or why not."""
    from cci_core.errors import CciError

    seconds = max(1, int(deadline - (now if now is not None else time.time())))
    argv = ["systemd-run", f"--unit={TIMER_UNIT}", f"--on-active={seconds}s", "--timer-property=AccuracySec=1s",
            "--quiet", "systemctl", "poweroff"]
    try:
        result = container.exec(argv)
    except CciError as exc:
        return str(exc)
    return None if result.exit_code == 0 else (result.stderr.strip() or f"systemd-run exited {result.exit_code}")


class StopAtDeadline:
    """While in this block, the container is force-stopped at ``deadline`` (seconds since the epoch; None: never):
    whatever watches it then ends the session as after a poweroff inside (the attach, ``cci run``, a headless run).
    :attr:`reached` tells whether this block stopped it, :attr:`passed` whether the deadline has passed (whoever
    stopped the container: this block, or the timer inside)."""

    def __init__(self, container: Container, deadline: int | None) -> None:
        self._container, self._deadline = container, deadline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deadline", daemon=True)
        self.reached = False

    @property
    def passed(self) -> bool:
        """Whether the deadline has passed."""
        return overdue(self._deadline)

    def __enter__(self) -> StopAtDeadline:
        if self._deadline is not None:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()

    def _run(self) -> None:
        assert self._deadline is not None
        if self._done.wait(max(0.0, self._deadline - time.time())):
            return
        from cci_core.errors import CciError

        self.reached = True
        try:
            self._container.stop(force=True)
        except CciError:
            pass  # stopped already, or gone: what watches the container finds out
