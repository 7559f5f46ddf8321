#!/usr/bin/env python3
"""cci's container paths against the incus CLI doing the same work, measured in the same run.

    python benchmarks/lifecycle.py [--runs N] [--project P] [--image I]

(a) ``cci run -- true`` against the floor: the same steps by hand with the
    incus CLI (create with cci's config, add the workspace disk, put the NIC on
    the default policy's network, isolated and with its anti-spoofing filter, start, exec
    ``true`` as uid 1000 in /workspace, delete). Target: at most 0.8x (issue 18). The
    policy networks have NAT off here, as in the tests.
(b) ``cci list`` with 20 cci containers against ``incus list``. Target: at most 1.0x.
(c) The Incus API requests of one ``cci run -- true`` and of one floor, as the daemon logs
    them (see :class:`RequestCounter`), with cci's by kind.
(d) ``cci shell`` until the stand-in tool's screen shows (``started <id>``, in a host tmux pane
    polled every 50 ms, as benchmarks/claude_start.py does for Claude Code) against the floor
    of launch + exec: the steps of (a), then ``incus exec -t`` of the tool as the user in
    /workspace. Target: at most 1.0x.

Needs the Incus test environment (scripts/incus-test-env) and runs in its
project (default cci-test). Prints medians and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
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


def median_ms(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and 90th percentile wall time of ``action`` in milliseconds, after one warm-up."""
    action()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return median_p90(samples)


def median_p90(samples: list[float]) -> tuple[float, float]:
    """The median and the 90th percentile of ``samples``."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.9) - 1)]


def sh(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


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
    return parser.parse_args()


#: marks the benchmark's own polling requests, left out of the counts
POLL = "bench-poll"


class RequestCounter:
    """``with RequestCounter(project) as counter: counter.count(action)`` -> the requests ``action`` made.

    Incus logs every request it handles ("Handling API request", with method and URL) on its
    ``logging`` events feed at debug level, whoever the client is. This follows that feed with ``incus monitor`` and counts the requests between two marker requests
    (a GET of an instance that does not exist, named uniquely) made before and after the action,
    so that the count holds exactly the action's requests, with nothing lost to the feed's delay.
    The same counter serves cci and the incus CLI floor. Requests of other clients running
    at the same time would be counted too: measure on an otherwise idle daemon.
    """

    def __init__(self, project: str) -> None:
        from cci_builtin_plugins.incus.connection import Endpoint
        from cci_builtin_plugins.incus.rest import IncusAPI
        from tests.incus_env import SOCKET

        self.project = project
        self._api = IncusAPI(Endpoint(SOCKET), project)
        self._lines: list[dict[str, str]] = []
        self._seen = threading.Condition()
        self._monitor: subprocess.Popen[str] | None = None

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
                self._lines.append({"method": context.get("method", ""), "url": context.get("url", "")})
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
        return Counter(f"{line['method']} {shape(line['url'])}" for line in lines if POLL not in line["url"])

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
             "aliases": "NAME", "profiles": "NAME", "pools": "NAME", "volumes": "TYPE", "projects": "NAME"}
    return "/".join(kinds.get(parts[index - 1], part) if index else part for index, part in enumerate(parts))


def summary(requests: Counter[str]) -> str:
    """One line per request kind, most frequent first."""
    return "\n".join(f"    {count:>3}  {request}" for request, count in requests.most_common())


def main() -> int:
    args = incus_options(__doc__, 10, os.environ.get("CCI_TEST_IMAGE", "cci-test-base"))

    from cci_builtin_plugins.incus.driver import IncusDriver
    from tests.incus_env import NETWORK_SUBNETS
    from tests.integration.conftest import RESTRICTED_NETWORK

    incus = ["incus", "--project", args.project]
    with tempfile.TemporaryDirectory() as scratch:
        workspace = Path(scratch) / "workspace"  # not the home itself: cci refuses to mount that
        workspace.mkdir()
        # the floor works in it as uid 1000 through an idmapped mount (host uid N is container uid N): it must
        # be able to enter it whoever owns it (root, with root's umask) and whatever the umask made it
        workspace.chmod(0o755)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch, "LANG": "C.UTF-8",
               "CCI_INCUS_PROJECT": args.project, "CCI_DEFAULTS_IMAGE": args.image,
               "CCI_INCUS_NETWORK_NAT": "false", "CCI_INCUS_NETWORK_SUBNETS": NETWORK_SUBNETS}
        config = [item for key, value in IncusDriver.base_config.items() for item in ("-c", f"{key}={value}")]

        def by_hand() -> None:
            name = "bench-floor"
            sh(*incus, "init", args.image, name, *config)
            sh(*incus, "config", "device", "add", name, "workspace", "disk", f"source={workspace}",
               "path=/workspace", "shift=true")
            sh(*incus, "config", "device", "add", name, "eth0", "nic", f"network={RESTRICTED_NETWORK}", "name=eth0",
               "security.port_isolation=true", "security.mac_filtering=true", "security.ipv4_filtering=true")
            sh(*incus, "start", name)
            sh(*incus, "exec", name, "--user", "1000", "--group", "1000", "--cwd", "/workspace", "--", "true")
            sh(*incus, "delete", "--force", name)

        def with_cci() -> None:
            sh(args.cci, "--workspace", str(workspace), "run", "--", "true", env=env)

        print(f"{'':<34}{'cci ms':>10}{'p90':>9}{'floor ms':>11}{'ratio':>8}   ({args.runs} runs each)")
        with_cci()  # makes the restricted policy's network, which the floor uses too
        floor = median_ms(by_hand, args.runs)
        report("(a) cci run -- true", median_ms(with_cci, args.runs), floor, 0.8)

        names = [f"bench-list-{index}" for index in range(20)]
        labels = ["-c", "user.cci.kind=session", "-c", "user.cci.session=bench", "-c", "user.cci.state=saved",
                  "-c", "user.cci.mode=persistent", "-c", f"user.cci.workspace={workspace}"]
        for name in names:
            sh(*incus, "init", args.image, name, *labels)
        try:
            listing = median_ms(lambda: sh(*incus, "list"), args.runs)
            report("(b) cci list, 20 containers", median_ms(lambda: sh(args.cci, "list", env=env), args.runs),
                   listing, 1.0)
        finally:
            sh(*incus, "delete", "--force", *names)

        from cci_core.naming import workspace_id

        with RequestCounter(args.project) as counter:
            prefix = f"cci-{workspace_id(workspace)}-"
            counter.wait_gone(prefix)
            ours = counter.count(lambda: (with_cci(), counter.wait_gone(prefix)))  # the detached end's requests too
            theirs = counter.count(by_hand)
        print(f"(c) API requests per run: cci {sum(ours.values())}, floor {sum(theirs.values())}; cci's:")
        print(summary(ours))

        shell_start(args, Path(scratch), env, config)
    return 0


def shell_start(args: argparse.Namespace, scratch: Path, env: dict[str, str], config: list[str]) -> None:
    """(d): ``cci shell`` to the stand-in tool's screen against launch + exec by hand, alternating."""
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
        f"{incus} exec -t {name} -- su - code -c 'cd /workspace && ./.stand-in --new {uuid.uuid4()}'",
    ))

    def ours() -> float:
        try:
            return seconds_to_screen(f"{args.cci} --workspace {workspace} shell", env, "started ") * 1000
        finally:
            sh(args.cci, "kill", "--force", container_name(workspace, 1), env=env)

    def floor() -> float:
        try:
            return seconds_to_screen(by_hand, env, "started ") * 1000
        finally:
            sh("incus", "--project", args.project, "delete", "--force", name)

    ours(), floor()  # warm-up
    timed: list[tuple[float, float]] = [(ours(), floor()) for _ in range(args.runs)]
    report("(d) cci shell to the tool's screen", median_p90([pair[0] for pair in timed]),
           median_p90([pair[1] for pair in timed]), 1.0)


if __name__ == "__main__":
    sys.exit(main())
