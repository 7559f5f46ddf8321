"""Every benchmark in benchmarks/ is in docs/development.md, with the command that runs it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_is_documented_with_its_command() -> None:
    documented = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    missing = [script.name for script in sorted((ROOT / "benchmarks").glob("*.py"))
               if f"python benchmarks/{script.name}" not in documented]
    assert missing == []
