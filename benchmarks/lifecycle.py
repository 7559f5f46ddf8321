#!/usr/bin/env python3
"""cci's container paths against the incus CLI doing the same work, measured in the same run.

    python benchmarks/lifecycle.py [--runs N] [--project P] [--image I]

(a) ``cci run -- true`` against the floor: the same steps by hand with the
    incus CLI (create with cci's config, add the workspace disk, put the NIC on
    the default policy's network, isolated and with its anti-spoofing filter, start, exec
    ``true`` as uid 1000 in /workspace, delete). Target: within 1.3x. The policy
    networks have NAT off here, as in the tests.
(b) ``cci list`` with 20 cci containers against ``incus list``. Target: within 2x.

Needs the Incus test environment (scripts/incus-test-env) and runs in its
project (default cci-test). Prints medians and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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
        report("(a) cci run -- true", median_ms(with_cci, args.runs), floor, 1.3)

        names = [f"bench-list-{index}" for index in range(20)]
        labels = ["-c", "user.cci.kind=session", "-c", "user.cci.session=bench", "-c", "user.cci.state=saved",
                  "-c", "user.cci.mode=persistent", "-c", f"user.cci.workspace={workspace}"]
        for name in names:
            sh(*incus, "init", args.image, name, *labels)
        try:
            listing = median_ms(lambda: sh(*incus, "list"), args.runs)
            report("(b) cci list, 20 containers", median_ms(lambda: sh(args.cci, "list", env=env), args.runs),
                   listing, 2.0)
        finally:
            sh(*incus, "delete", "--force", *names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
