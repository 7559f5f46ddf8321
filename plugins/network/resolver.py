"""Resolving allowlisted names on the host, with a cache of the last good addresses.

The cache (``~/.cci/network/addresses.json``) keeps, for each name, the IPv4
addresses of its last successful resolution: when DNS fails, those stay
allowed rather than the name becoming unreachable.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from cci_core.api import state_dir


class Cached(NamedTuple):
    """A name's last good addresses and when they were resolved (seconds since the epoch)."""

    addresses: tuple[str, ...]
    resolved_at: float


class Resolution(NamedTuple):
    """The addresses to allow for each name, and what the user should hear about it."""

    addresses: dict[str, tuple[str, ...]]
    notes: list[str]


def default_cache_path() -> Path:
    """``~/.cci/network/addresses.json`` of the invoking user."""
    return state_dir() / "network" / "addresses.json"


def resolve_ipv4(name: str) -> tuple[str, ...]:
    """The IPv4 addresses the host's resolver gives for ``name``, sorted; an ``OSError`` if it fails."""
    infos = socket.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    addresses = sorted({str(info[4][0]) for info in infos}, key=socket.inet_aton)
    if not addresses:
        raise OSError(f"no IPv4 address for {name}")
    return tuple(addresses)


class AddressCache:
    """The JSON file of last good addresses (private to the user: 0600 in a 0700 directory)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_path()

    def load(self) -> dict[str, Cached]:
        """Every cached name; an unreadable or malformed cache counts as empty."""
        from cci_core.api import read_json

        document = read_json(self.path)
        try:
            return {name: Cached(tuple(str(a) for a in entry["addresses"]), float(entry["resolved_at"]))
                    for name, entry in document.items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            return {}

    def store(self, fresh: Mapping[str, Cached]) -> None:
        """Merge ``fresh`` entries into the file, atomically (a concurrent reader sees old or new)."""
        if not fresh:
            return
        from cci_core.api import replace_private_json

        entries = {**self.load(), **fresh}
        replace_private_json(self.path, {name: {"addresses": list(entry.addresses), "resolved_at": entry.resolved_at}
                                         for name, entry in sorted(entries.items())})


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def resolve_names(names: Iterable[str], cache: AddressCache | None = None) -> Resolution:
    """Resolve every name at once; a failure falls back to the cached addresses (with a note)."""
    names = list(dict.fromkeys(names))
    if not names:
        return Resolution({}, [])
    cache = cache or AddressCache()

    def attempt(name: str) -> tuple[str, ...] | OSError:
        try:
            return resolve_ipv4(name)
        except (OSError, UnicodeError) as exc:
            return exc if isinstance(exc, OSError) else OSError(str(exc))

    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        outcomes = dict(zip(names, pool.map(attempt, names)))
    now = time.time()
    cached = cache.load()
    addresses: dict[str, tuple[str, ...]] = {}
    fresh: dict[str, Cached] = {}
    notes = []
    for name, outcome in outcomes.items():
        if not isinstance(outcome, OSError):
            addresses[name] = outcome
            fresh[name] = Cached(outcome, now)
        elif name in cached:
            addresses[name] = cached[name].addresses
            notes.append(f"could not resolve {name} ({outcome}): keeping its addresses from "
                         f"{_when(cached[name].resolved_at)}")
        else:
            addresses[name] = ()
            notes.append(f"could not resolve {name} ({outcome}) and no earlier addresses are known: "
                         "it stays unreachable until it resolves")
    try:
        cache.store(fresh)
    except OSError as exc:
        notes.append(f"could not write the address cache {cache.path}: {exc}")
    return Resolution(addresses, notes)
