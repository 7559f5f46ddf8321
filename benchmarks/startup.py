#!/usr/bin/env python3
"""Wall time of cci's fast paths next to the interpreter's own start-up, measured in the same run.

    python benchmarks/startup.py [--runs N] [--fresh | --cci PATH] [--check]
    python benchmarks/startup.py --measures [--runs N]

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

``--measures`` weighs each start-up measure of docs/architecture.md ("Speed"):
each command runs as it is and once per measure with that measure turned off
(cci is started through ``python -c``, which patches the measure's module right
after it is imported, so nothing else changes), all in the same rounds. It
prints the medians and, per measure, the median of the per-round differences
(off minus on): what the measure is worth.
"""

from __future__ import annotations

import argparse
import os
import random
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


def timed_rounds(commands: dict[str, list[str]], runs: int, env: dict[str, str],
                 shuffle: bool = False) -> dict[str, list[float]]:
    """Milliseconds of wall time of each command, run round-robin ``runs`` times (after one warm-up round).

    Round-robin, so that every command sees the same machine: on a shared host the speed of
    the whole machine drifts by tens of percent within minutes, which would otherwise land
    on whichever command happened to run then. With ``shuffle`` each round runs them in
    another order, so that no command always follows the same one.
    """
    samples: dict[str, list[float]] = {label: [] for label in commands}
    order = list(commands.items())
    for index in range(runs + 1):
        if shuffle:
            random.Random(index).shuffle(order)
        for label, argv in order:
            started = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
            if index:  # the first round warms the page cache and writes bytecode
                samples[label].append((time.perf_counter() - started) * 1000)
    return samples


#: runs cci the way its console script does, after PATCHES: the modules named in AFTER are patched once imported
LAUNCH = """
import sys
from importlib.machinery import PathFinder
AFTER = {}
class AfterImport:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in AFTER:
            return None
        spec = PathFinder.find_spec(name, path, target)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            AFTER[name](module)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, AfterImport)
%s
sys.argv[0] = "cci"
%s
main()
"""
ENTRY = "from cci_core.cli.entry import main"

#: each measure: (what turns it off, how cci is started without it); the control turns nothing off, and so
#: shows how far the same command's timings scatter on this machine
MEASURES: dict[str, tuple[str, str]] = {
    "(control: nothing)": ("", ENTRY),
    "own entry-point reader": ("""
def reader(own):
    def find_entry_points(group, path=None):
        import importlib.metadata
        return [own.EntryPoint(ep.name, ep.value, group, str(ep.dist._path))
                for ep in importlib.metadata.entry_points(group=group)]
    own.find_entry_points = find_entry_points
AFTER["cci_core.entry_points"] = reader
""", ENTRY),
    "paused GC": ("", "from cci_core.cli.main import main"),
    "static command summaries": ("""
def summaries(group):
    shown = group.CciGroup.format_commands
    def format_commands(self, ctx, formatter):
        for name, core in group.CORE_COMMANDS.items():
            summary = self.get_command(ctx, name).get_short_help_str(1000)
            group.CORE_COMMANDS[name] = core._replace(summary=summary)
        shown(self, ctx, formatter)
    group.CciGroup.format_commands = format_commands
AFTER["cci_core.cli.group"] = summaries
""", ENTRY),
    "lazy registrations": ("""
def eager(registry):
    add = registry.Registry.add
    def load_now(self, name, item, *, plugin):
        add(self, name, item.load(plugin) if isinstance(item, registry.Lazy) else item, plugin=plugin)
    registry.Registry.add = load_now
AFTER["cci_core.registry"] = eager
""", ENTRY),
    "json, difflib, traceback on use": ("""
def eager(package):
    import difflib, json, traceback
AFTER["cci_core"] = eager
""", ENTRY),
    "NamedTuple records": ("""
import dataclasses, typing
class Record:
    \"\"\"A frozen dataclass that unpacks like a tuple: what the records would be without NamedTuple.\"\"\"
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("__annotations__", {}):
            value = cls.__dict__.get(name)
            if type(value).__hash__ is None:  # unhashable: a dataclass needs a default_factory
                setattr(cls, name, dataclasses.field(default_factory=lambda value=value: value))
        fields = dataclasses.fields(dataclasses.dataclass(frozen=True)(cls))
        cls._fields = tuple(field.name for field in fields)
        cls._field_defaults = {}
        for field in fields:
            if field.default is not dataclasses.MISSING:
                cls._field_defaults[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                cls._field_defaults[field.name] = field.default_factory()
    def __iter__(self):
        return iter([getattr(self, field.name) for field in dataclasses.fields(self)])
    def __getitem__(self, index):
        return list(self)[index]
    def __len__(self):
        return len(dataclasses.fields(self))
    def _replace(self, **changes):
        return dataclasses.replace(self, **changes)
    def _asdict(self):
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
typing.NamedTuple = Record
def sections(schema):  # a plugin's config section must be a NamedTuple class: accept these instead
    check = schema.check_section_class
    schema.check_section_class = lambda cls: None if isinstance(cls, type) and issubclass(cls, Record) else check(cls)
AFTER["cci_core.config.schema"] = sections
""", ENTRY),
}


def measure_commands(python: Path) -> dict[str, list[str]]:
    """Each fast path with all measures (``+``) and with each one turned off (``-<measure>``)."""
    commands = {}
    for command in COMMANDS:
        label = "cci " + " ".join(command)
        commands[f"{label} +"] = [str(python), "-c", LAUNCH % ("", ENTRY), *command]
        for measure, (patch, entry) in MEASURES.items():
            commands[f"{label} -{measure}"] = [str(python), "-c", LAUNCH % (patch, entry), *command]
    return commands


def report_measures(samples: dict[str, list[float]]) -> None:
    """Medians, and per measure the median per-round difference it makes (the rounds are paired) and the
    interquartile range of those differences."""
    baseline = statistics.median(samples["python -c pass"])
    print(f"python -c pass: {baseline:.1f} ms (median)")
    print(f"{'command':<18}{'measure (turned off)':<33}{'median ms':>10}{'x python':>10}{'worth ms':>10}"
          f"{'IQR ms':>14}")
    for command in COMMANDS:
        label = "cci " + " ".join(command)
        on = samples[f"{label} +"]
        print(f"{label:<18}{'(all on)':<33}{statistics.median(on):>10.1f}{statistics.median(on) / baseline:>10.2f}")
        for measure in MEASURES:
            off = samples[f"{label} -{measure}"]
            differences = [b - a for a, b in zip(on, off)]
            low, _, high = statistics.quantiles(differences, n=4)
            print(f"{'':<18}{measure:<33}{statistics.median(off):>10.1f}{statistics.median(off) / baseline:>10.2f}"
                  f"{statistics.median(differences):>10.1f}{low:>7.1f}..{high:<5.1f}")


def fresh_install(root: Path, *extra: Path) -> Path:
    """Install this checkout (and the ``extra`` projects) into a new virtualenv under ``root``, not editable;
    return its interpreter."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    project = Path(__file__).resolve().parents[1]
    pip = [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    installed = subprocess.run([*pip, "install", str(project), *map(str, extra)], capture_output=True, text=True,
                               check=False)
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
    parser.add_argument("--measures", action="store_true", help="weigh each start-up measure (see above)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        python = fresh_install(Path(scratch)) if args.fresh else Path(sys.executable)
        cci = args.cci or shutil.which("cci", path=str(python.parent)) or "cci"
        home = Path(scratch) / "home"
        home.mkdir()
        # an empty home and workspace: no user config, nothing of this machine's state
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
        if os.environ.get("PYTHONPATH"):  # to measure another checkout with this interpreter
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        os.chdir(home)
        if args.measures:
            print(f"weighing the start-up measures with {python} ({args.runs} rounds)")
            samples = timed_rounds({"python -c pass": [str(python), "-c", "pass"], **measure_commands(python)},
                                   args.runs, env, shuffle=True)
            report_measures(samples)
            return 0
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
