#!/usr/bin/env python3
"""cci's own Incus client (``plugins/incus/rest.py``) against pylxd, measured in the same run.

    python benchmarks/incus_clients.py [--runs N] [--cycles N] [--project P] [--image I] [--verbose]

(a) Import time: a fresh interpreter importing cci's REST client, and one importing
    pylxd, timed inside the interpreter around the import; medians of N runs.
(b) HTTP requests (and websockets) each client sends for the same work, counted in
    process (pylxd's requests go through ``http.client`` and its websockets through
    ws4py; cci's through ``plugins/incus/http1.py`` and ``websocket.py``, whose handshake
    is one of its requests: counted as a websocket only), and the median wall time of N runs (of --cycles runs for the cycle):
      list   every container of the project with its config and status;
      cycle  create a container from the image, start it, exec ``true``, stop it, delete it.
    pylxd is used the way its documentation shows (``instances.all()`` then the
    attributes; ``create``/``start``/``stop``/``delete`` with ``wait=True``,
    ``execute``), and once with the fewest requests it allows (``recursion=1``).

Needs the Incus test environment (scripts/incus-test-env) and pylxd (the ``test``
extra); runs in its project (default cci-test), where it makes and deletes its own
containers (named ``bench-clients-...``). Prints numbers; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SOCKET = "/var/lib/incus/unix.socket"


def import_ms(modules: list[str], runs: int) -> list[float]:
    """For each module, the median time in milliseconds a fresh interpreter takes to import it (timed
    inside the interpreter); the modules take turns, so that a busy moment of the machine hits them alike."""
    samples: list[list[float]] = [[] for _ in modules]
    for _ in range(runs):
        for index, module in enumerate(modules):
            code = f"import time; started = time.perf_counter(); import {module}; print(time.perf_counter() - started)"
            output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
            samples[index].append(float(output) * 1000)
    return [statistics.median(series) for series in samples]


class Requests:
    """Counts the HTTP requests (``method path``) and websockets this process opens while active."""

    def __init__(self) -> None:
        self.http: Counter[str] = Counter()
        self.websockets = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[Requests]:
        from ws4py.client import WebSocketBaseClient

        from cci_builtin_plugins.incus import http1, websocket

        putrequest, connect = http.client.HTTPConnection.putrequest, WebSocketBaseClient.connect
        request, open_socket = http1.Connection.request, websocket.open_socket
        counter = self

        def counted_putrequest(self: http.client.HTTPConnection, method: str, url: str, *args: Any,
                               **kwargs: Any) -> Any:
            counter.http[f"{method} {url.split('?')[0]}"] += 1
            return putrequest(self, method, url, *args, **kwargs)

        def counted_request(self: http1.Connection, method: str, target: str, *args: Any, **kwargs: Any) -> Any:
            headers = kwargs.get("headers") or (args[1] if len(args) > 1 else None) or {}
            if headers.get("Upgrade") != "websocket":
                counter.http[f"{method} {target.split('?')[0]}"] += 1
            return request(self, method, target, *args, **kwargs)

        def counted_connect(self: Any) -> Any:
            counter.websockets += 1
            return connect(self)

        def counted_open(*args: Any, **kwargs: Any) -> Any:
            counter.websockets += 1
            return open_socket(*args, **kwargs)

        http.client.HTTPConnection.putrequest = counted_putrequest  # type: ignore[method-assign]
        http1.Connection.request = counted_request  # type: ignore[method-assign]
        WebSocketBaseClient.connect = counted_connect
        websocket.open_socket = counted_open
        try:
            yield self
        finally:
            http.client.HTTPConnection.putrequest = putrequest  # type: ignore[method-assign]
            http1.Connection.request = request  # type: ignore[method-assign]
            WebSocketBaseClient.connect = connect
            websocket.open_socket = open_socket

    @property
    def total(self) -> int:
        return sum(self.http.values())


def measure(work: Callable[[], object], runs: int) -> tuple[Requests, float]:
    """The requests one run of ``work`` makes, and the median wall time in milliseconds of ``runs`` runs
    (after one warm-up run, which imports what the client needs)."""
    work()
    samples = []
    for _ in range(runs):
        requests = Requests()
        with requests.counting():
            started = time.perf_counter()
            work()
            samples.append((time.perf_counter() - started) * 1000)
    return requests, statistics.median(samples)


def cci_driver(project: str) -> Any:
    from cci_core.config import Override, load_config
    from cci_builtin_plugins.incus.driver import IncusDriver

    return IncusDriver(load_config(Path("/"), environ={}, overrides=[Override("incus.project", project, "bench")]))


def cci_list(project: str) -> Callable[[], object]:
    def work() -> object:
        return [(info.name, info.labels, info.status) for info in cci_driver(project).list_containers()]
    return work


def pylxd_list(project: str, recursion: int) -> Callable[[], object]:
    def work() -> object:
        import pylxd
        from pylxd.exceptions import NotFound

        client = pylxd.Client(endpoint=SOCKET, project=project)
        instances = client.instances.all(recursion=recursion)
        if not recursion:  # only names: each instance is read on its own
            for instance in instances:
                with contextlib.suppress(NotFound):  # deleted meanwhile (by another user of the project)
                    instance.sync()
        return [(instance.name, instance.config, instance.status) for instance in instances]
    return work


def cci_cycle(project: str, image: str) -> Callable[[], object]:
    def work() -> object:
        from cci_core.driver import ContainerSpec

        container = cci_driver(project).create(ContainerSpec(f"bench-clients-{uuid.uuid4().hex[:8]}", image))
        try:
            container.start()
            result = container.exec(["true"])
            container.stop(force=True)
        finally:
            container.delete()
        return result.exit_code
    return work


def pylxd_cycle(project: str, image: str) -> Callable[[], object]:
    def work() -> object:
        import pylxd

        client = pylxd.Client(endpoint=SOCKET, project=project)
        config = {"name": f"bench-clients-{uuid.uuid4().hex[:8]}", "source": {"type": "image", "alias": image}}
        instance = client.instances.create(config, wait=True)
        try:
            instance.start(wait=True)
            result = instance.execute(["true"])
            instance.stop(force=True, wait=True)
        finally:
            instance.delete(wait=True)
        return result.exit_code
    return work


def report(label: str, requests: Requests, elapsed: float) -> None:
    print(f"{label:<36}{requests.total:>9}{requests.websockets:>12}{elapsed:>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="import time: fresh interpreters per client (median)")
    parser.add_argument("--cycles", type=int, default=3, help="create-to-delete cycles per client (median)")
    parser.add_argument("--project", default="cci-test")
    parser.add_argument("--image", default="cci-test-base")
    parser.add_argument("--verbose", action="store_true", help="list each client's requests")
    args = parser.parse_args()

    modules = {"cci's REST client": "cci_builtin_plugins.incus.rest", "pylxd": "pylxd"}
    print(f"import time, median of {args.runs} fresh interpreters each:")
    for (label, module), median in zip(modules.items(), import_ms(list(modules.values()), args.runs)):
        print(f"  {label:<18} {module:<32} {median:>6.0f} ms")
    print()
    print(f"{'same work (median ms)':<36}{'requests':>9}{'websockets':>12}{'ms':>10}")
    cases = [
        ("list: cci", cci_list(args.project), args.runs),
        ("list: pylxd, all() then each", pylxd_list(args.project, 0), args.runs),
        ("list: pylxd, all(recursion=1)", pylxd_list(args.project, 1), args.runs),
        ("cycle: cci", cci_cycle(args.project, args.image), args.cycles),
        ("cycle: pylxd", pylxd_cycle(args.project, args.image), args.cycles),
    ]
    for label, work, runs in cases:
        requests, elapsed = measure(work, runs)
        report(label, requests, elapsed)
        if args.verbose:
            for request, count in sorted(requests.http.items()):
                print(f"    {count:>3} x {request}")
    print("(the list counts depend on how many containers the project holds now)")


if __name__ == "__main__":
    main()
