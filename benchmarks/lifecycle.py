#!/usr/bin/env python3
"""cci's container paths against the incus CLI doing the same work, measured in the same run.

    python benchmarks/lifecycle.py [--runs N] [--project P] [--image I] [--fresh | --cci PATH] [--only LETTERS]

``--fresh`` measures the cci a user gets: this checkout (and the stand-in tool of (d)) installed, not editable,
into a new virtualenv without setuptools (see benchmarks/startup.py: the editable install's and setuptools' import
hooks add to every start of the development virtualenv's cci). ``--only`` runs some of the measures: ``a`` for
(a), (a0) and (a2), ``b``, ``c`` for (c) and (c2), ``d`` for (d), (d2) and (c3); (e) is always printed.

(a) ``cci run -- true`` against the floor: the same steps by hand with the
    incus CLI (create with cci's config, add the workspace disk, put the NIC on
    the default policy's network, isolated and with its anti-spoofing filter, start, wait
    until the container is ready as cci does (``incus exec`` of cci's readiness check:
    ``basic.target`` and the network up), exec ``true`` as uid 1000 in /workspace, delete).
    Target: at most 0.8x (issue 18). The policy networks have NAT off here, as in the tests.
(a0) ``cci run --no-wait -- true`` against the same floor without the readiness wait.
(a2) The same ``cci run -- true`` with a warm pool of 2 (``CCI_POOL_SIZE=2``) against the floor of (a).
    Target: at most 0.4x. Before each run (not timed) the benchmark waits until the pool holds 2 ready
    containers and the refill started by the run before has ended, so each run takes from a full pool;
    after each run, until the run's container is gone.
(b) ``cci list`` with 20 cci containers against ``incus list``. Target: at most 1.0x.
(c) The Incus API requests of one ``cci run -- true`` and of one floor, as the daemon logs
    them (see :class:`RequestCounter`), with cci's by kind.
(c2) The requests of one pooled ``cci run -- true``: the take, from the command's start to the end of its
    detached end, with no refill (the pool holds 3 ready then, more than its size: the run starts none);
    then the refill a take starts, separately: a run from a full pool of 2 counted until the pool is whole
    again, less the take's.
(d) ``cci shell`` until the stand-in tool's screen shows (``started <id>``, in a host tmux pane
    polled every 50 ms, as benchmarks/claude_start.py does for Claude Code) against the floor
    of launch + exec: the steps of (a) with its readiness wait, then ``incus exec -t`` of the tool
    as the user in /workspace. Target: at most 1.0x.
(d2) The same ``cci shell`` with a warm pool of 2, against the floor of (d), alternating with both and
    waiting for a full pool as (a2). Target: at most 0.5x.
(c3) The requests of one ``cci shell`` start to the stand-in tool's screen (no pool), by kind, and of the
    floor of (d); the kill afterwards is not counted.
(e) The memory of an idle ready pool container: ``memory.usage`` of its Incus state, and the ``anon`` and
    ``file`` of its cgroup's ``memory.stat``; the median over the ready containers seen, each as last seen.

The pool's containers (``cci-pool-*``) are the benchmark's own: those of the pool key its runs used (read
from the refill's lock file in its home) that were not there before. It deletes them, and any container of
its workspaces, at the end, also when it fails; no other pool container is touched (``cci clean --pool``
would delete all of the user's).

Needs the Incus test environment (scripts/incus-test-env) and runs in its
project (default cci-test). Prints medians and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cci_core.session_readiness import READY_CHECK  # noqa: E402  (cci's readiness check, which the floors run too)


def settle(busy: float = 0.15, window: float = 0.2, timeout: float = 15) -> None:
    """Wait until the machine is quiet: its CPUs less than ``busy`` busy over ``window`` seconds (at most
    ``timeout`` s). What a run leaves behind (a detached delete, btrfs's cleaner, a pool container finishing its
    boot) then does not slow the next one down, whichever it is: every timed run starts from the same quiet state."""
    def ticks() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(field) for field in stat.readline().split()[1:]]
        idle = values[3] + values[4]  # idle, iowait
        return sum(values) - idle, sum(values)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy_before, total_before = ticks()
        time.sleep(window)
        busy_after, total_after = ticks()
        if busy_after - busy_before < busy * max(1, total_after - total_before):
            return


def time_ms(action: Callable[[], object]) -> float:
    """Wall time of one run of ``action`` in milliseconds, started on a quiet machine (:func:`settle`)."""
    settle()
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def median_ms(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and 90th percentile wall time of ``action`` in milliseconds, after one warm-up, each run started on a
    quiet machine."""
    action()
    return median_p90([time_ms(action) for _ in range(runs)])


def median_p90(samples: list[float]) -> tuple[float, float]:
    """The median and the 90th percentile of ``samples``."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.9) - 1)]


def sh(*argv: str, env: dict[str, str] | None = None) -> None:
    """Run ``argv``; an exec Incus fails right after a start ("Failed to retrieve PID", as cci knows) is retried."""
    for _ in range(3):
        result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
        if b"Failed to retrieve PID of executing child process" not in result.stderr:
            break
    if result.returncode:
        raise SystemExit(f"{shlex.join(argv)[:200]} exited with {result.returncode}: {result.stderr.decode()[-2000:]}")


def seconds_to_screen(command: str, env: dict[str, str], text: str, timeout: float = 300) -> float:
    """Seconds from starting ``command`` in a fresh host tmux pane until ``text`` shows in it."""
    socket = f"cci-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket]
    exports = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
    started = time.perf_counter()
    subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "30", f"env -i {exports} {command}; sleep 600"],
                   check=True)
    try:
        while True:
            screen = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True).stdout
            if text in screen:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"{text!r} did not appear within {timeout} s; the pane shows:\n{screen}")
            time.sleep(0.05)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)


def session_environment(scratch: Path, project: str, image: str) -> dict[str, str]:
    """What a cci command gets here: an empty home, the test project and image, policy networks with NAT off."""
    from tests.incus_env import NETWORK_SUBNETS

    home = scratch / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", "TERM": "xterm",
            "CCI_INCUS_PROJECT": project, "CCI_DEFAULTS_IMAGE": image,
            "CCI_INCUS_NETWORK_NAT": "false", "CCI_INCUS_NETWORK_SUBNETS": NETWORK_SUBNETS}


def report(label: str, ours: tuple[float, float], floor: tuple[float, float], target: float) -> None:
    ratio = ours[0] / floor[0]
    print(f"{label:<34}{ours[0]:>10.0f}{ours[1]:>9.0f}{floor[0]:>11.0f}{ratio:>8.2f}  target <= {target}x "
          f"{'ok' if ratio <= target else 'OVER'}")


def incus_options(description: str, runs: int, image: str) -> argparse.Namespace:
    """The options of a benchmark in the Incus test project: --runs, --project, --image (default ``image``), --cci."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--project", default=os.environ.get("CCI_TEST_PROJECT", "cci-test"))
    parser.add_argument("--image", default=image)
    parser.add_argument("--cci", default=shutil.which("cci", path=str(Path(sys.executable).parent)) or "cci")
    parser.add_argument("--fresh", action="store_true", help="measure a fresh non-editable install of this checkout")
    parser.add_argument("--only", default="abcd", help="the measures to run (letters; default all)")
    return parser.parse_args()


def fresh_cci(scratch: Path) -> str:
    """The ``cci`` of a fresh non-editable install of this checkout and the stand-in tool, made under ``scratch``."""
    from startup import fresh_install

    print("installing this checkout and the stand-in tool into a new virtualenv (--fresh)", flush=True)
    python = fresh_install(scratch / "fresh", HERE.parent / "tests" / "plugins" / "cci-stand-in-tool")
    return str(python.parent / "cci")


#: marks the benchmark's own polling requests, left out of the counts
POLL = "bench-poll"


class RequestCounter:
    """``with RequestCounter(project) as counter: counter.count(action)`` -> the requests ``action`` made.

    Incus logs every request it handles ("Handling API request", with method and URL) on its
    ``logging`` events feed at debug level, whoever the client is. This follows that feed with ``incus monitor`` and counts the requests between two marker requests
    (a GET of an instance that does not exist, named uniquely) made before and after the action,
    so that the count holds exactly the action's requests, with nothing lost to the feed's delay.
    The same counter serves cci and the incus CLI floor. Only the requests of the benchmark's own
    user are counted (the feed names each request's user): requests of other clients of that user running
    at the same time would be counted too, so measure on an otherwise idle daemon.
    """

    def __init__(self, project: str) -> None:
        from cci_builtin_plugins.incus.connection import Endpoint
        from cci_builtin_plugins.incus.rest import IncusAPI
        from tests.incus_env import SOCKET

        self.project = project
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self._api = IncusAPI(Endpoint(SOCKET), project)
        self._lines: list[dict[str, str]] = []
        self._seen = threading.Condition()
        self._monitor: subprocess.Popen[str] | None = None
        self.others = 0

    def __enter__(self) -> RequestCounter:
        self._monitor = subprocess.Popen(["incus", "monitor", "--type=logging", "--format=json"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self._mark()  # the feed is live once a marker comes through
        return self

    def __exit__(self, *_: object) -> None:
        if self._monitor is not None:
            self._monitor.terminate()
            self._monitor.wait(10)

    def _read(self) -> None:
        assert self._monitor is not None and self._monitor.stdout is not None
        for line in self._monitor.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            metadata = event.get("metadata") or {}
            if metadata.get("message") != "Handling API request":
                continue
            context = metadata.get("context") or {}
            with self._seen:
                self._lines.append({"method": context.get("method", ""), "url": context.get("url", ""),
                                    "user": context.get("username", self.user)})
                self._seen.notify_all()

    def _mark(self) -> int:
        """Make a marker request and wait until the feed shows it; the index of its line."""
        marker = f"bench-marker-{uuid.uuid4().hex[:12]}"
        for _attempt in range(60):  # made again until seen: the feed may not be connected yet
            self._api.raw("GET", f"/1.0/instances/{marker}")  # one request (the incus CLI would GET /1.0 first)
            with self._seen:
                if self._seen.wait_for(lambda: self._index(marker) is not None, timeout=0.5):
                    return self._index(marker) or 0
        raise RuntimeError("the Incus logging feed showed no marker request within 30 s")

    def _index(self, marker: str) -> int | None:
        for index in range(len(self._lines) - 1, -1, -1):
            if marker in self._lines[index]["url"]:
                return index
        return None

    def count(self, action: Callable[[], object]) -> Counter[str]:
        """The requests ``action`` made, by ``METHOD /path`` (names and ids shortened to their kind)."""
        start = self._mark()
        action()
        end = self._mark()
        with self._seen:
            lines = self._lines[start + 1:end]
        #: the requests of other users meanwhile (left out: the integration tests run as their own user)
        self.others = sum(line["user"] != self.user for line in lines)
        return Counter(f"{line['method']} {shape(line['url'])}" for line in lines
                       if POLL not in line["url"] and line["user"] == self.user)

    def wait_gone(self, prefix: str, timeout: float = 60) -> None:
        """Wait until no instance's name starts with ``prefix`` (a 'cci run''s detached end deletes its container
        after it returned); its requests carry :data:`POLL`, which :meth:`count` leaves out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self._api.raw("GET", "/1.0/instances", params={POLL: 1}).json()["metadata"]
            if not any(url.rsplit("/", 1)[-1].split("?")[0].startswith(prefix) for url in listed):
                return
            time.sleep(0.05)
        raise RuntimeError(f"instances named {prefix}* still there after {timeout} s")


def shape(url: str) -> str:
    """A request's path with the query dropped and the names in it replaced by their kind:
    ``/1.0/instances/cci-1a2b-1/exec`` -> ``/1.0/instances/NAME/exec``."""
    parts = url.split("?", 1)[0].rstrip("/").split("/")
    kinds = {"instances": "NAME", "operations": "ID", "networks": "NAME", "network-acls": "NAME", "images": "ID",
             "aliases": "NAME", "profiles": "NAME", "pools": "NAME", "volumes": "TYPE", "projects": "NAME",
             "containers": "NAME"}
    return "/".join(kinds.get(parts[index - 1], part) if index else part for index, part in enumerate(parts))


def summary(requests: Counter[str]) -> str:
    """One line per request kind, most frequent first."""
    return "\n".join(f"    {count:>3}  {request}" for request, count in requests.most_common())


def difference(more: Counter[str], less: Counter[str]) -> Counter[str]:
    """``more`` less ``less``, by kind, the negative differences kept (Counter's ``-`` drops them)."""
    return Counter({kind: more[kind] - less[kind] for kind in more.keys() | less.keys() if more[kind] != less[kind]})


class WarmPool:
    """The benchmark's warm pool: waits for it to be full, finds a pooled session, reads a pool container's memory,
    and deletes what the benchmark made.

    The pool key of the benchmark's runs is the name of the lock file its refills hold (``~/.cci/pool/KEY`` in the
    benchmark's home); a refill is running while a ``python -m cci_core.cli.pool_fill`` process with that home is
    (it is started, as a process, before the launch that starts it returns). Every request carries :data:`POLL`.
    """

    def __init__(self, project: str, home: Path, size: int, image: str) -> None:
        from cci_builtin_plugins.incus.connection import Endpoint
        from cci_builtin_plugins.incus.rest import IncusAPI
        from tests.incus_env import SOCKET

        self.project = project
        self.home = home
        self.size = size
        self._api = IncusAPI(Endpoint(SOCKET), project)
        alias = self._api.raw("GET", f"/1.0/images/aliases/{image}", params={POLL: 1}).json()["metadata"] or {}
        #: the image a launch makes its containers of now (a pool container of another is not taken)
        self.fingerprint = alias.get("target", "")
        #: the pool containers there before the benchmark's runs (any key): never deleted
        self.before = {item["name"] for item in self.instances() if labels_of(item).get("kind") == "pool"}
        #: name -> (memory.usage, anon, file) in bytes, as last read (see :meth:`sample_memory`)
        self.memory: dict[str, tuple[int, int | None, int | None]] = {}

    def instances(self) -> list[dict[str, object]]:
        return self._api.raw("GET", "/1.0/instances", params={"recursion": 1, POLL: 1}).json()["metadata"] or []

    def keys(self) -> set[str]:
        """The pool keys the benchmark's refills have used."""
        locks = self.home / ".cci" / "pool"
        return {path.name for path in locks.iterdir()} if locks.is_dir() else set()

    def refilling(self) -> bool:
        """Whether a refill started by one of the benchmark's runs is still running."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if b"cci_core.cli.pool_fill" not in (entry / "cmdline").read_bytes():
                    continue
                environment = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile, or not ours to read
            if f"HOME={self.home}".encode() in environment:
                return True
        return False

    def ready(self) -> list[str]:
        """The ready containers of the benchmark's pool key(s) and image, running."""
        keys = self.keys()
        return [str(item["name"]) for item in self.instances() if item.get("status") == "Running"
                and (labels := labels_of(item)).get("kind") == "pool" and labels.get("pool") == "ready"
                and labels.get("pool-key") in keys and labels.get("pool-image") == self.fingerprint]

    def wait_full(self, size: int | None = None, timeout: float = 300) -> list[str]:
        """Wait until no refill of the benchmark's runs is running and the pool holds ``size`` (default: its size)
        ready containers; their names."""
        size = self.size if size is None else size
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.refilling():
                if not self.keys():
                    raise RuntimeError(f"no refill has run (no lock file in {self.home / '.cci' / 'pool'}): "
                                       "the pool key of the benchmark's runs is unknown")
                ready = self.ready()
                if len(ready) >= size:
                    return ready
            time.sleep(0.1)
        raise RuntimeError(f"the warm pool did not hold {size} ready containers within {timeout} s "
                           f"(ready: {self.ready()}, refilling: {self.refilling()}; "
                           f"see {self.home}/.cci/logs/pool.log)")

    def sessions_of(self, workspace: Path) -> list[str]:
        """The containers of sessions in ``workspace`` (a pooled one keeps its cci-pool-* name)."""
        path = str(workspace.resolve())
        return [str(item["name"]) for item in self.instances() if labels_of(item).get("workspace") == path]

    def wait_gone(self, workspace: Path, timeout: float = 60) -> None:
        """Wait until no container of ``workspace`` is left (a 'cci run''s detached end deletes it after it
        returned)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sessions_of(workspace):
                return
            time.sleep(0.05)
        raise RuntimeError(f"containers of {workspace} still there after {timeout} s: {self.sessions_of(workspace)}")

    def sample_memory(self) -> None:
        """Read the memory of each ready container of the pool (its Incus state; its cgroup's memory.stat)."""
        for name in self.ready():
            state = self._api.raw("GET", f"/1.0/instances/{name}/state", params={POLL: 1}).json()["metadata"] or {}
            usage = int((state.get("memory") or {}).get("usage") or 0)
            # cgroup v2: anon and file; v1 (a hybrid host): total_rss and total_cache, the same split
            stat = subprocess.run(["incus", "--project", self.project, "exec", name, "--", "sh", "-c",
                                   "cat /sys/fs/cgroup/memory.stat || cat /sys/fs/cgroup/memory/memory.stat"],
                                  capture_output=True, text=True, check=False).stdout
            values = dict(line.split(" ", 1) for line in stat.splitlines() if " " in line)
            anon, cache = values.get("anon", values.get("total_rss")), values.get("file", values.get("total_cache"))
            self.memory[name] = (usage, int(anon) if anon else None, int(cache) if cache else None)

    def memory_report(self) -> str:
        """(e): the medians of :attr:`memory`, in MiB."""
        if not self.memory:
            return "(e) memory of an idle ready pool container: none was read"
        samples = list(self.memory.values())

        def mib(values: list[int | None]) -> str:
            known = [value for value in values if value is not None]
            return f"{statistics.median(known) / 2**20:.0f}" if known else "?"

        usage = [sample[0] for sample in samples]
        return (f"(e) memory of an idle ready pool container, median of {len(samples)}: {mib(list(usage))} MiB "
                f"(Incus state memory.usage; {min(usage) / 2**20:.0f}-{max(usage) / 2**20:.0f}), of which "
                f"anon {mib([sample[1] for sample in samples])} MiB, file {mib([sample[2] for sample in samples])} "
                "MiB (its cgroup's memory.stat)")

    def remove(self, workspaces: list[Path], timeout: float = 300) -> None:
        """Delete the pool containers of the benchmark's pool key(s) that were not there before, and any container
        of ``workspaces``, once no refill of the benchmark's runs is running (one still running after ``timeout``
        seconds would make another: that is said)."""
        deadline = time.monotonic() + timeout
        while self.refilling() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.refilling():
            print(f"warning: a refill of the benchmark's pool still runs after {timeout} s", file=sys.stderr)
        keys = self.keys()
        paths = {str(workspace.resolve()) for workspace in workspaces}
        names = [str(item["name"]) for item in self.instances()
                 if ((labels := labels_of(item)).get("kind") == "pool" and labels.get("pool-key") in keys
                     and item["name"] not in self.before) or labels.get("workspace") in paths]
        if names:
            subprocess.run(["incus", "--project", self.project, "delete", "--force", *names], check=False,
                           stdout=subprocess.DEVNULL)
        left = [str(item["name"]) for item in self.instances() if item["name"] in names]
        if left:
            print(f"warning: could not delete {', '.join(left)}", file=sys.stderr)


def labels_of(instance: dict[str, object]) -> dict[str, str]:
    """An instance's cci labels (``user.cci.*``), without the prefix."""
    config = instance.get("config") or {}
    assert isinstance(config, dict)
    return {key[len("user.cci."):]: value for key, value in config.items() if key.startswith("user.cci.")}


def main() -> int:
    args = incus_options(__doc__, 10, os.environ.get("CCI_TEST_IMAGE", "cci-test-base"))

    from cci_builtin_plugins.incus.driver import IncusDriver
    from tests.incus_env import NETWORK_SUBNETS
    from tests.integration.conftest import RESTRICTED_NETWORK

    incus = ["incus", "--project", args.project]
    with tempfile.TemporaryDirectory() as scratch:
        if args.fresh:
            args.cci = fresh_cci(Path(scratch))
        workspace = Path(scratch) / "workspace"  # not the home itself: cci refuses to mount that
        workspace.mkdir()
        # the floor works in it as uid 1000 through an idmapped mount (host uid N is container uid N): it must
        # be able to enter it whoever owns it (root, with root's umask) and whatever the umask made it
        workspace.chmod(0o755)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch, "LANG": "C.UTF-8",
               "CCI_INCUS_PROJECT": args.project, "CCI_DEFAULTS_IMAGE": args.image,
               "CCI_INCUS_NETWORK_NAT": "false", "CCI_INCUS_NETWORK_SUBNETS": NETWORK_SUBNETS}
        config = [item for key, value in IncusDriver.base_config.items() for item in ("-c", f"{key}={value}")]

        def by_hand(wait: bool = True) -> None:
            name = "bench-floor"
            sh(*incus, "init", args.image, name, *config)
            sh(*incus, "config", "device", "add", name, "workspace", "disk", f"source={workspace}",
               "path=/workspace", "shift=true")
            sh(*incus, "config", "device", "add", name, "eth0", "nic", f"network={RESTRICTED_NETWORK}", "name=eth0",
               "security.port_isolation=true", "security.mac_filtering=true", "security.ipv4_filtering=true")
            sh(*incus, "start", name)
            if wait:
                sh(*incus, "exec", name, "--", "sh", "-c", READY_CHECK, "sh", "60")
            sh(*incus, "exec", name, "--user", "1000", "--group", "1000", "--cwd", "/workspace", "--", "true")
            sh(*incus, "delete", "--force", name)

        def with_cci(environment: dict[str, str] = env, *flags: str) -> None:
            sh(args.cci, "--workspace", str(workspace), "run", *flags, "--", "true", env=environment)

        print(f"{'':<34}{'cci ms':>10}{'p90':>9}{'floor ms':>11}{'ratio':>8}   ({args.runs} runs each)")
        with_cci()  # makes the restricted policy's network, which the floor uses too
        floor = median_ms(by_hand, args.runs) if "a" in args.only else (0.0, 0.0)
        if "a" in args.only:
            report("(a) cci run -- true", median_ms(with_cci, args.runs), floor, 0.8)
            report("(a0) cci run --no-wait -- true", median_ms(lambda: with_cci(env, "--no-wait"), args.runs),
                   median_ms(lambda: by_hand(wait=False), args.runs), 0.8)

        pool = WarmPool(args.project, Path(scratch), 2, args.image)
        try:
            measure_pooled(args, pool, workspace, env, config, floor, by_hand, with_cci)
        finally:
            pool.remove([workspace, Path(scratch) / "stand-in"])
    return 0


def measure_pooled(args: argparse.Namespace, pool: WarmPool, workspace: Path, env: dict[str, str], config: list[str],
                   floor: tuple[float, float], by_hand: Callable[[], None],
                   with_cci: Callable[..., None]) -> None:
    """(a2) to (e), with ``pool`` (whose containers the caller deletes afterwards); (b), (c) and (d) in their places."""
    pooled = {**env, "CCI_POOL_SIZE": str(pool.size)}

    def pooled_run() -> float:
        """One timed ``cci run -- true`` from a full pool (waited for first), then until its container is gone."""
        pool.wait_gone(workspace)
        pool.wait_full()
        pool.sample_memory()
        elapsed = time_ms(lambda: with_cci(pooled))
        pool.wait_gone(workspace)
        return elapsed

    with_cci(pooled)  # warm-up: the first fills the pool (its refill tells the pool key)
    pool.wait_gone(workspace)
    if "a" in args.only:
        report(f"(a2) cci run -- true, pool of {pool.size}", median_p90([pooled_run() for _ in range(args.runs)]),
               floor, 0.4)
    pool.wait_full()  # the last run's refill, before anything else is timed
    if "b" in args.only:
        list_twenty(args, env, workspace)
    if "c" in args.only:
        count_requests(args, pool, workspace, env, by_hand, with_cci)
    if "d" in args.only:
        shell_start(args, workspace.parent, env, config, pool)
    pool.wait_full()
    pool.sample_memory()
    print(pool.memory_report())


def list_twenty(args: argparse.Namespace, env: dict[str, str], workspace: Path) -> None:
    """(b): ``cci list`` with 20 (stopped) cci containers against ``incus list``, alternating."""
    incus = ["incus", "--project", args.project]
    names = [f"bench-list-{index}" for index in range(20)]
    labels = ["-c", "user.cci.kind=session", "-c", "user.cci.session=bench", "-c", "user.cci.state=saved",
              "-c", "user.cci.mode=persistent", "-c", f"user.cci.workspace={workspace}"]
    for name in names:
        sh(*incus, "init", args.image, name, *labels)
    try:
        ours, floor = (lambda: sh(args.cci, "list", env=env)), (lambda: sh(*incus, "list"))
        ours(), floor()  # warm-up
        pairs = [(time_ms(ours), time_ms(floor)) for _ in range(args.runs)]
        report("(b) cci list, 20 containers", median_p90([pair[0] for pair in pairs]),
               median_p90([pair[1] for pair in pairs]), 1.0)
    finally:
        sh(*incus, "delete", "--force", *names)


def count_requests(args: argparse.Namespace, pool: WarmPool, workspace: Path, env: dict[str, str],
                   by_hand: Callable[[], None], with_cci: Callable[..., None]) -> None:
    """(c) and (c2): the API requests of a ``cci run -- true`` and of its floor, and of a pooled run and its refill."""
    from cci_core.naming import workspace_id

    pooled = {**env, "CCI_POOL_SIZE": str(pool.size)}
    bigger = {**env, "CCI_POOL_SIZE": str(pool.size + 1)}
    with RequestCounter(args.project) as counter:
        prefix = f"cci-{workspace_id(workspace)}-"
        counter.wait_gone(prefix)
        others = []  # other users' requests during each count (left out of it)
        ours = counter.count(lambda: (with_cci(), counter.wait_gone(prefix)))  # the detached end's requests too
        others.append(counter.others)
        theirs = counter.count(by_hand)
        others.append(counter.others)
        # (c2): a take with no refill: the pool holds one more than its size (a run with a pool one bigger fills
        # it so), and a launch starts no refill where the pool was more than whole
        pool.wait_full()
        with_cci(bigger)
        pool.wait_gone(workspace)
        pool.wait_full(pool.size + 1)
        take = counter.count(lambda: (with_cci(pooled), pool.wait_gone(workspace)))
        others.append(counter.others)
        refilled = pool.refilling()
        # a take and the refill it starts, until the pool is whole again
        pool.wait_full()
        both = counter.count(lambda: (with_cci(pooled), pool.wait_gone(workspace), pool.wait_full()))
        others.append(counter.others)
    print(f"(c) API requests per run: cci {sum(ours.values())}, floor {sum(theirs.values())}; cci's:")
    print(summary(ours))
    print(f"(c2) API requests of a pooled run (the take: from the command's start to its return and the end of its "
          f"detached end; no refill{' (one ran all the same: counted too)' if refilled else ''}): "
          f"{sum(take.values())}; by kind:")
    print(summary(take))
    refill = difference(both, take)
    print(f"     the refill a take starts (a take from a full pool counted until the pool is whole again, "
          f"{sum(both.values())}, less the take's): {sum(refill.values())}; by kind:")
    print(summary(refill))
    if any(others):
        print(f"     (other users' requests meanwhile, left out: {', '.join(map(str, others))} during the counts of "
              "(c) cci, (c) floor, (c2) take, (c2) take and refill; this user's other clients would be counted)")


def shell_start(args: argparse.Namespace, scratch: Path, env: dict[str, str], config: list[str],
                pool: WarmPool) -> None:
    """(d) and (d2): ``cci shell`` to the stand-in tool's screen, without a pool and with ``pool``, against launch +
    exec by hand, alternating. A pooled run starts from a full pool and ends when the pool is whole again (not
    timed), so that its refill runs alongside none of the others."""
    from cci_core.naming import container_name
    from tests.integration.conftest import RESTRICTED_NETWORK
    from tests.stand_in import stand_in_workspace

    home = os.environ.get("HOME", "")
    os.environ["HOME"] = env["HOME"]  # the workspace's config is trusted in the benchmark's home
    try:
        workspace = stand_in_workspace(scratch / "stand-in")
    finally:
        os.environ["HOME"] = home
    workspace.chmod(0o755)
    incus = f"incus --project {args.project}"
    name = "bench-shell-floor"
    settings = " ".join(map(shlex.quote, config))  # (the syscalls deny list has spaces and newlines)
    by_hand = " && ".join((
        f"{incus} init -q {args.image} {name} {settings}",
        f"{incus} config device add -q {name} workspace disk source={workspace} path=/workspace shift=true",
        f"{incus} config device add -q {name} eth0 nic network={RESTRICTED_NETWORK} name=eth0 "
        "security.port_isolation=true security.mac_filtering=true security.ipv4_filtering=true",
        f"{incus} start {name}",
        f"{incus} exec {name} -- sh -c {shlex.quote(READY_CHECK)} sh 60",
        f"{incus} exec -t {name} -- su - code -c 'cd /workspace && ./.stand-in --new {uuid.uuid4()}'",
    ))

    def ours() -> float:
        settle()
        try:
            return seconds_to_screen(f"{args.cci} --workspace {workspace} shell", env, "started ") * 1000
        finally:
            sh(args.cci, "kill", "--force", container_name(workspace, 1), env=env)

    def floor() -> float:
        settle()
        try:
            return seconds_to_screen(by_hand, env, "started ") * 1000
        finally:
            sh("incus", "--project", args.project, "delete", "--force", name)

    pooled = {**env, "CCI_POOL_SIZE": str(pool.size)}

    def from_pool() -> float:
        pool.wait_gone(workspace)
        pool.wait_full()
        settle()
        try:
            return seconds_to_screen(f"{args.cci} --workspace {workspace} shell", pooled, "started ") * 1000
        finally:
            for session in pool.sessions_of(workspace):  # a pooled session keeps its cci-pool-* name
                sh(args.cci, "kill", "--force", session, env=pooled)
            pool.wait_gone(workspace)
            pool.wait_full()

    ours(), floor(), from_pool()  # warm-up
    timed: list[tuple[float, float, float]] = [(ours(), floor(), from_pool()) for _ in range(args.runs)]
    report("(d) cci shell to the tool's screen", median_p90([three[0] for three in timed]),
           median_p90([three[1] for three in timed]), 1.0)
    report(f"(d2) cci shell, pool of {pool.size}", median_p90([three[2] for three in timed]),
           median_p90([three[1] for three in timed]), 0.5)

    with RequestCounter(args.project) as counter:
        try:
            ours_requests = counter.count(lambda: seconds_to_screen(f"{args.cci} --workspace {workspace} shell", env,
                                                                    "started "))
        finally:
            sh(args.cci, "kill", "--force", container_name(workspace, 1), env=env)
        try:
            floor_requests = counter.count(lambda: seconds_to_screen(by_hand, env, "started "))
        finally:
            sh("incus", "--project", args.project, "delete", "--force", name)
    print(f"(c3) API requests of a cci shell start to the tool's screen: cci {sum(ours_requests.values())}, "
          f"floor {sum(floor_requests.values())}; cci's:")
    print(summary(ours_requests))


if __name__ == "__main__":
    sys.exit(main())
