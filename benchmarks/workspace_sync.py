#!/usr/bin/env python3
"""The workspace sync (for a remote Incus) against ``incus file push -r`` / ``pull -r`` of the same tree, measured in
the same run, both through the test daemon's loopback HTTPS remote.

    python benchmarks/workspace_sync.py [--runs N] [--files 10000] [--megabytes 100] [--remote R] [--image I]

A host tree of N files (100 directories, random content, M MB in all) goes into a running container of the test
image and comes back. Measured, each after one warm-up:

(a) into the container: ``sync_to_container`` (one streamed archive) against ``incus file push -r``;
(b) back to the host, all of it new there (an empty host directory, no manifest): ``sync_to_host`` against
    ``incus file pull -r``;
(c) back again with nothing changed (the manifest of (b)): what a periodic save costs, against the same pull;
(d) ``cci run -- true`` in a small workspace (three files) over the remote (its copy in and back included) against
    the same over the local socket, alternating.

Target: at most 0.5x the incus CLI for (a) and (b). Needs the Incus test environment (scripts/incus-test-env, which
makes the remote and its incus CLI config in /var/lib/cci-test-env/remote-conf); prints medians and ratios, asserts
nothing.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cci_core.driver import TreeLimits  # noqa: E402  (this checkout's, found through the path above)
from save import median_s  # noqa: E402  (benchmarks/save.py, beside this one)

TARGET = 0.5
LIMITS = TreeLimits(max_file=1 << 30, max_bytes=1 << 34, timeout=3600, idle=600)


def make_tree(root: Path, files: int, megabytes: int) -> None:
    per_dir, size = max(files // 100, 1), megabytes * 1_000_000 // max(files, 1)
    for directory in range(100):
        folder = root / f"d{directory}"
        folder.mkdir(parents=True)
        for index in range(per_dir):
            (folder / f"f{index}.txt").write_bytes(os.urandom(size))


def main() -> int:
    from tests import incus_env

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--remote", default=incus_env.REMOTE)
    parser.add_argument("--image", default=incus_env.IMAGE)
    args = parser.parse_args()

    os.environ["INCUS_CONF"] = str(incus_env.REMOTE_CONF)
    incus = ["incus", "--project", incus_env.PROJECT]
    remote = f"{args.remote}:"
    name = f"bench-sync-{os.getpid()}"
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch, "workspace")  # (incus file push -r makes /workspace of it)
        make_tree(tree, args.files, args.megabytes)
        subprocess.run([*incus, "launch", f"{remote}{args.image}", f"{remote}{name}"], check=True,
                       stdout=subprocess.DEVNULL)
        try:
            container, sync = syncer(name, args.remote)
            records: dict[str, object] = {}

            def push_ours() -> None:
                container.exec(["rm", "-rf", "/workspace"])
                records.clear()
                records.update(sync.sync_to_container(container, tree, "/workspace", uid=1000,
                                                      excludes=sync.Excludes([]), limits=LIMITS))

            def push_theirs() -> None:
                container.exec(["rm", "-rf", "/workspace"])
                subprocess.run([*incus, "file", "push", "-r", "-q", str(tree), f"{remote}{name}/"], check=True)

            def pull_ours() -> None:
                with tempfile.TemporaryDirectory(dir=scratch) as target:
                    sync.sync_to_host(container, "/workspace", Path(target), {}, excludes=sync.Excludes([]),
                                      limits=LIMITS)

            def pull_theirs() -> None:
                with tempfile.TemporaryDirectory(dir=scratch) as target:
                    subprocess.run([*incus, "file", "pull", "-r", "-q", f"{remote}{name}/workspace", target], check=True)

            def again() -> None:
                sync.sync_to_host(container, "/workspace", back, dict(kept), excludes=sync.Excludes([]),
                                  limits=LIMITS)

            print(f"{args.files} files, {args.megabytes} MB over {args.remote}; medians of {args.runs} runs (s)")
            print(f"{'':<34}{'cci':>8}{'incus -r':>10}{'ratio':>8}")
            worst = 0.0
            for label, ours, theirs in (("(a) into the container", push_ours, push_theirs),
                                        ("(b) back, all of it new", pull_ours, pull_theirs)):
                mine, floor = median_s(ours, args.runs), median_s(theirs, args.runs)
                worst = max(worst, mine / floor)
                print(f"{label:<34}{mine:>8.2f}{floor:>10.2f}{mine / floor:>8.2f}  target <= {TARGET}x "
                      f"{'ok' if mine / floor <= TARGET else 'OVER'}")
            push_ours()
            back = Path(scratch, "back")
            back.mkdir()
            _, kept = sync.sync_to_host(container, "/workspace", back, {}, excludes=sync.Excludes([]), limits=LIMITS)
            mine = median_s(again, args.runs)
            print(f"{'(c) back, nothing changed':<34}{mine:>8.2f}{floor:>10.2f}{mine / floor:>8.2f}  (a periodic save)")
            remote_run, local_run = run_over_both(Path(scratch), args.remote, args.image, args.runs)
            print(f"{'(d) cci run -- true, remote/local':<34}{remote_run:>8.2f}{local_run:>10.2f}"
                  f"{remote_run / local_run:>8.2f}  (the local socket in the second column)")
        finally:
            subprocess.run([*incus, "delete", "--force", f"{remote}{name}"], check=False, stdout=subprocess.DEVNULL)
            shutil.rmtree(scratch, ignore_errors=True)
    return 0 if worst <= TARGET else 1


def run_over_both(scratch: Path, remote: str, image: str, runs: int) -> tuple[float, float]:
    """Medians (s) of ``cci run -- true`` over ``remote`` and over the local socket, alternating."""
    from tests import incus_env

    workspace = scratch / "small"
    workspace.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (workspace / name).write_text(name)
    cci = str(Path(sys.executable).with_name("cci"))
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(scratch / "home"), "LANG": "C.UTF-8",
            "CCI_DEFAULTS_IMAGE": image, "CCI_INCUS_NETWORK_NAT": "false",
            "CCI_INCUS_NETWORK_SUBNETS": incus_env.NETWORK_SUBNETS, "INCUS_CONF": str(incus_env.REMOTE_CONF)}
    over = {"remote": {**base, "CCI_INCUS_REMOTE": remote}, "local": {**base, "CCI_INCUS_PROJECT": incus_env.PROJECT}}
    samples: dict[str, list[float]] = {"remote": [], "local": []}
    for round_ in range(runs + 1):
        for where, environ in over.items():
            started = time.perf_counter()
            subprocess.run([cci, "--workspace", str(workspace), "run", "--", "true"], env=environ, check=True,
                           stdout=subprocess.DEVNULL)
            if round_:  # (the first round warms up)
                samples[where].append(time.perf_counter() - started)
    return statistics.median(samples["remote"]), statistics.median(samples["local"])


def syncer(name: str, remote: str) -> tuple[object, object]:
    """Container ``name`` on ``remote`` as cci's driver sees it, and the sync module."""
    from cci_core import workspace_sync
    from cci_core.config import Override, load_config
    from cci_builtin_plugins.incus.driver import IncusDriver

    config = load_config(Path("/"), environ=dict(os.environ), overrides=[Override("incus.remote", remote, "benchmark")])
    return IncusDriver(config).get(name), workspace_sync


if __name__ == "__main__":
    sys.exit(main())
