#!/usr/bin/env python3
"""What a fresh machine takes to reach Claude Code's screen, step by step, with the image's size.

    python benchmarks/first_run.py [--runs N] [--project P] [--image ALIAS]

1. ``scripts/install --method venv`` into a fresh home (a temporary prefix; pip
   fetches cci's dependencies as on a new machine);
2. ``cci setup --no-image --no-restart`` with the config file in that home (so
   nothing of this machine's configuration changes); on a machine already set up
   it has little left to do: the script prints its plan's header, which says how
   many steps were done already;
3. ``cci build --source host`` as a new alias, with that home's empty cache, so
   Claude Code is fetched from the npm registry again (needs root and the package
   mirror; minutes); ``--image ALIAS`` skips it and uses an existing image;
4. the first ``cci shell`` to Claude Code's screen on the new image (Incus unpacks
   it into the pool first), then the median of N more (warm);
5. the image's size: compressed (as stored by Incus) and unpacked in the pool.

The total is 1 + 2 + 3 + the first shell. Steps 1, 2 and the warm shell run N times
(medians); the build and the first shell once. The image made in step 3 is deleted
afterwards (``--keep-image`` keeps it). Sessions run in the test project (default
cci-test) with NAT off, as in benchmarks/claude_start.py. Nothing is asserted.
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
sys.path.insert(0, str(HERE))

from claude_start import cci_shell_seconds, session_environment  # noqa: E402  (benchmarks/ is no package)

CHECKOUT = HERE.parent


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(*argv: str, env: dict[str, str]) -> str:
    """Run ``argv``; its stdout and stderr (exits with them when it fails)."""
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def fresh_home(scratch: Path, label: str) -> dict[str, str]:
    """The environment of a user with a new, empty home."""
    home = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=scratch))
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


def install(scratch: Path) -> Path:
    """scripts/install into a fresh home; the cci it installed."""
    env = fresh_home(scratch, "install")
    run("bash", str(CHECKOUT / "scripts" / "install"), "--method", "venv", env=env)
    return Path(env["HOME"]) / ".local" / "bin" / "cci"


def image_size(alias: str, project: str) -> tuple[int, int]:
    """The image's compressed size and its unpacked size in the pool (bytes; 0 when unknown)."""
    import json

    [image] = json.loads(subprocess.run(["incus", "image", "list", alias, "--format", "json"], capture_output=True,
                                        text=True, check=True).stdout)
    pool = subprocess.run(["incus", "profile", "device", "get", "default", "root", "pool", "--project", project],
                          capture_output=True, text=True, check=False).stdout.strip()
    unpacked = Path("/var/lib/incus/storage-pools") / pool / "images" / image["fingerprint"]
    usage = subprocess.run(["du", "-sxb", str(unpacked)], capture_output=True, text=True, check=False).stdout
    return int(image["size"]), int(usage.split()[0]) if usage else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--project", default=os.environ.get("CCI_TEST_PROJECT", "cci-test"))
    parser.add_argument("--image", help="use this image instead of building one (no build time then)")
    parser.add_argument("--keep-image", action="store_true", help="keep the image step 3 builds")
    args = parser.parse_args()

    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        installs = []
        for _ in range(args.runs):
            started = time.perf_counter()
            cci = install(scratch)
            installs.append(time.perf_counter() - started)
        rows.append(("1. scripts/install (venv)", statistics.median(installs), f"median of {args.runs}"))

        setup_env = fresh_home(scratch, "setup")
        config_file = Path(setup_env["HOME"]) / "config.toml"
        setup = [str(cci), "setup", "--no-image", "--no-restart", "--config-file", str(config_file)]
        plans = []
        setups = []
        for _ in range(args.runs):
            started = time.perf_counter()
            plans.append(run(*setup, env=setup_env).splitlines()[0])
            setups.append(time.perf_counter() - started)
        again = f"; run again: {plans[-1].split(': ', 1)[-1]}" if args.runs > 1 else ""
        rows.append(("2. cci setup --no-image", statistics.median(setups), f"first: {plans[0]}{again}"))

        alias = args.image or f"bench-first-run-{os.getpid()}"
        if not args.image:
            build_env = {**fresh_home(scratch, "build"), "CCI_INCUS_PROJECT": "default"}
            seconds = timed(lambda: run(str(cci), "build", "--source", "host", "--alias", alias, env=build_env))
            rows.append(("3. cci build --source host", seconds, "fresh: base system and Claude Code fetched"))
        try:
            workspace = scratch / "workspace"
            workspace.mkdir()
            env = session_environment(scratch, args.project, alias)
            first = cci_shell_seconds(str(cci), workspace, env)
            rows.append(("4. first cci shell to Claude", first,
                         "image unpacked into the pool first" if not args.image else "image used before"))
            warm = statistics.median(cci_shell_seconds(str(cci), workspace, env) for _ in range(args.runs))
            compressed, unpacked = image_size(alias, args.project)
        finally:
            if not args.image and not args.keep_image:
                subprocess.run(["incus", "image", "delete", alias], capture_output=True, check=False)
                # its dated alias points at the same image: deleted with it

    total = sum(seconds for _, seconds, _ in rows)
    for label, seconds, note in rows:
        print(f"{label:<32}{seconds:>9.1f} s   {note}")
    print(f"{'total: fresh machine to Claude':<32}{total:>9.1f} s")
    print(f"{'(a later cci shell, warm)':<32}{warm:>9.1f} s   median of {args.runs}")
    print(f"image {alias}: {compressed / 2**20:.0f} MiB compressed, {unpacked / 2**20:.0f} MiB unpacked in the pool")
    return 0


if __name__ == "__main__":
    sys.exit(main())
