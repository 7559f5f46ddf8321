#!/usr/bin/env python3
"""Wall time of cci's fast paths next to the interpreter's own start-up, measured in the same run.

    python benchmarks/startup.py [--runs N] [--fresh | --cci PATH] [--check]

Prints, for each command, the median and 90th percentile of N rounds (all
commands run in turn, so that all see the same machine) and the ratios to the
medians of ``python -c pass`` and of the dependency floor (same interpreter): importing
cci's required libraries alone (click, pluggy, platformdirs), under which no command
that loads the config and plugins can start (``--version`` needs click only). The target for
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


def timed_rounds(commands: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, list[float]]:
    """Milliseconds of wall time of each command, run round-robin ``runs`` times (after one warm-up round).

    Round-robin, so that every command sees the same machine: on a shared host the speed of
    the whole machine drifts by tens of percent within minutes, which would otherwise land
    on whichever command happened to run then.
    """
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for index in range(runs + 1):
        for label, argv in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
            if index:  # the first round warms the page cache and writes bytecode
                samples[label].append((time.perf_counter() - started) * 1000)
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
        print(f"measuring {cci} ({args.runs} rounds)")
        commands = {"python -c pass": [str(python), "-c", "pass"],
                    "import dependencies": [str(python), "-c", DEPENDENCY_FLOOR],
                    **{"cci " + " ".join(command): [cci, *command] for command in COMMANDS}}
        samples = timed_rounds(commands, args.runs, env)
        medians = {label: statistics.median(values) for label, values in samples.items()}
        baseline, floor = medians["python -c pass"], medians["import dependencies"]
        print(f"{'command':<24}{'median ms':>10}{'p90 ms':>9}{'x python':>10}{'x floor':>9}  target < {TARGET_MS:.0f} ms")
        over = []
        for label, values in samples.items():
            values.sort()
            median, p90 = medians[label], values[max(0, int(len(values) * 0.9) - 1)]
            verdict = ""
            if label.startswith("cci "):
                verdict = "ok" if median < TARGET_MS else "OVER"
                if median >= TARGET_MS:
                    over.append(label)
            elif label == "import dependencies":
                verdict = "(floor)"
            print(f"{label:<24}{median:>10.1f}{p90:>9.1f}{median / baseline:>10.2f}{median / floor:>9.2f}  {verdict}")
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())
