#!/usr/bin/env python3
"""Wall time of cci's fast paths next to the interpreter's own start-up, measured in the same run.

    python benchmarks/startup.py [--runs N] [--fresh | --cci PATH] [--check]

Prints, for each command, the median and 90th percentile of N runs and the
ratio to the median of ``python -c pass`` (same interpreter). It also times
importing cci's required libraries alone (click, pluggy, platformdirs), the
floor under which no cci command can start. The target for
``cci --version``, ``cci --help`` and ``cci plugins list`` is a median under
150 ms on the project's reference machine (2 cores); with ``--check`` the
script exits 1 when a median is over the target.

``--fresh`` measures what a user gets: it installs the project (not editable)
into a new virtualenv without setuptools, as pipx, uv and Python 3.12+ make
them. setuptools' ``distutils-precedence.pth`` adds an import hook to every
start (about 5 ms here), and an editable install adds another.
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

TARGET_MS = 150.0
COMMANDS = (["--version"], ["--help"], ["plugins", "list"])
DEPENDENCY_FLOOR = "import click, pluggy, platformdirs"


def timed_runs(argv: list[str], runs: int, env: dict[str, str]) -> list[float]:
    """Milliseconds of wall time for each of ``runs`` runs of ``argv`` (after one warm-up run)."""
    samples = []
    for index in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
        if index:  # the first run warms the page cache and writes bytecode
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def fresh_install(root: Path) -> Path:
    """Install this checkout into a new virtualenv under ``root``; return its interpreter."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    project = Path(__file__).resolve().parents[1]
    pip = [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    installed = subprocess.run([*pip, "install", str(project)], capture_output=True, text=True, check=False)
    if installed.returncode:
        sys.exit(f"installing {project} failed:\n{installed.stderr}")
    subprocess.run([*pip, "uninstall", "--yes", "setuptools"], capture_output=True, check=False)
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cci", help="the cci to measure (default: the one beside this interpreter)")
    parser.add_argument("--fresh", action="store_true", help="measure a fresh non-editable install (see above)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a median is over the target")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        python = fresh_install(Path(scratch)) if args.fresh else Path(sys.executable)
        cci = args.cci or shutil.which("cci", path=str(python.parent)) or "cci"
        home = Path(scratch) / "home"
        home.mkdir()
        # an empty home and workspace: no user config, nothing of this machine's state
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
        os.chdir(home)
        print(f"measuring {cci} ({args.runs} runs each)")
        baseline = statistics.median(timed_runs([str(python), "-c", "pass"], args.runs, env))
        floor = statistics.median(timed_runs([str(python), "-c", DEPENDENCY_FLOOR], args.runs, env))
        print(f"{'command':<24}{'median ms':>10}{'p90 ms':>9}{'x python':>10}  target < {TARGET_MS:.0f} ms")
        print(f"{'python -c pass':<24}{baseline:>10.1f}{'':>9}{1.0:>10.2f}")
        print(f"{'import dependencies':<24}{floor:>10.1f}{'':>9}{floor / baseline:>10.2f}  (floor)")
        over = []
        for command in COMMANDS:
            samples = sorted(timed_runs([cci, *command], args.runs, env))
            median = statistics.median(samples)
            p90 = samples[int(len(samples) * 0.9) - 1]
            verdict = "ok" if median < TARGET_MS else "OVER"
            if median >= TARGET_MS:
                over.append(command)
            label = "cci " + " ".join(command)
            print(f"{label:<24}{median:>10.1f}{p90:>9.1f}{median / baseline:>10.2f}  {verdict}")
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())
