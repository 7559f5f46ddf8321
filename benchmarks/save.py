#!/usr/bin/env python3
"""A session save against ``incus file pull -r`` of the same tree, measured in the same run.

    python benchmarks/save.py [--runs N] [--files 5000] [--megabytes 50] [--project P] [--image I]

A container of the test image gets a ``~/.claude`` of N files (50 directories,
random content, M MB in all). Measured, each after one warm-up:

(a) the container running (a detach or periodic save): cci's save of the Claude
    Code state directory (``tool-state``'s ``save_state``: read, filter and
    swap into ``~/.cci/sessions-claude/``) against ``incus file pull -r`` of it;
(b) the container stopped (``cci shutdown``, a poweroff): the same two.

Target: the save at most 0.5x the pull. Needs the Incus test environment
(scripts/incus-test-env) and runs in its project (default cci-test). Prints
medians and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TARGET = 0.5


def median_s(action: Callable[[], object], runs: int) -> float:
    """Median wall time of ``action`` in seconds, after one warm-up."""
    action()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--project", default=os.environ.get("CCI_TEST_PROJECT", "cci-test"))
    parser.add_argument("--image", default=os.environ.get("CCI_TEST_IMAGE", "cci-test-base"))
    args = parser.parse_args()

    incus = ["incus", "--project", args.project]
    name = f"bench-save-{os.getpid()}"
    per_dir, size = args.files // 50, args.megabytes * 1_000_000 // args.files
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["HOME"] = scratch  # the saves go to this ~/.cci
        subprocess.run([*incus, "launch", args.image, name], check=True, stdout=subprocess.DEVNULL)
        try:
            subprocess.run([*incus, "exec", name, "--", "sh", "-c",
                            f"cd /home/code && mkdir -p .claude && cd .claude && for d in $(seq 1 50); do "
                            f"mkdir p$d; for f in $(seq 1 {per_dir}); do head -c {size} /dev/urandom > p$d/f$f.jsonl; "
                            "done; done; chown -R code:code /home/code/.claude"], check=True)
            save = saver(name, args.project, Path(scratch))

            def pull() -> None:
                with tempfile.TemporaryDirectory(dir=scratch) as target:
                    subprocess.run([*incus, "file", "pull", "-r", f"{name}/home/code/.claude", target], check=True)

            print(f"{args.files} files, {args.megabytes} MB; medians of {args.runs} runs (s)")
            print(f"{'':<28}{'cci save':>10}{'file pull -r':>14}{'ratio':>8}")
            worst = 0.0
            for state in ("running", "stopped"):
                if state == "stopped":
                    subprocess.run([*incus, "stop", "--force", name], check=True)
                ours, floor = median_s(save, args.runs), median_s(pull, args.runs)
                ratio = ours / floor
                worst = max(worst, ratio)
                print(f"{'container ' + state:<28}{ours:>10.2f}{floor:>14.2f}{ratio:>8.2f}  target <= {TARGET}x "
                      f"{'ok' if ratio <= TARGET else 'OVER'}")
        finally:
            subprocess.run([*incus, "delete", "--force", name], check=False, stdout=subprocess.DEVNULL)
    return 0 if worst <= TARGET else 1


def saver(name: str, project: str, home: Path) -> Callable[[], object]:
    """One save of the Claude Code state of container ``name``, as cci makes it at a session's end."""
    from cci_core.config import Override, load_config
    from cci_core.context import LaunchContext
    from cci_builtin_plugins.incus.driver import IncusDriver
    from cci_builtin_plugins.tools.claude import ClaudeCode
    from cci_builtin_plugins.tools.state import save_state

    workspace = home / "workspace"
    workspace.mkdir()
    config = load_config(workspace, environ={}, overrides=[Override("incus.project", project, "benchmark")])
    container = IncusDriver(config).get(name)
    ctx = LaunchContext(config=config, workspace=workspace, container_name=name, slot=1, session_id="bench",
                        persistent=False, image="", tool=ClaudeCode())

    def save() -> None:
        if save_state(ctx, container) is None:
            raise SystemExit("the save was abandoned")

    return save


if __name__ == "__main__":
    sys.exit(main())
