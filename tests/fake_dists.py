"""Install fake third-party plugin distributions on sys.path, found through importlib.metadata."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest


def install_fake_plugin(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    plugin: str,
    module: str,
    source: str,
    distribution: str = "fake-dist",
    version: str = "1.2",
) -> None:
    """Write ``module`` and a ``<distribution>.dist-info`` declaring it in the ``cci`` entry-point group."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    with (info / "entry_points.txt").open("a") as handle:
        handle.write(f"[cci]\n{plugin} = {module}\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, module, raising=False)
