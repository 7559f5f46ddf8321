"""The everyday container paths talk to Incus without pylxd and requests (about 330 ms to import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import CCI_SCRIPT
from tests.unit.test_fast_paths import HEAVY

pytestmark = pytest.mark.incus


@pytest.mark.parametrize("args", [["list"], ["run", "--", "true"]])
def test_container_paths_import_nothing_heavy(args: list[str], cci_environ: dict[str, str], tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result = subprocess.run([sys.executable, "-X", "importtime", str(CCI_SCRIPT), "--workspace", str(workspace),
                             *args], env=cci_environ, capture_output=True, text=True, check=False, cwd=workspace,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "cci_builtin_plugins.incus.rest" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    # nor http.client (with email and ssl, about 20 ms), nor ws4py (about 30 ms): plugins/incus/http1.py speaks
    # HTTP on the local socket, plugins/incus/websocket.py the websockets of an exec; nor OpenSSL's hashes
    # (hashlib loads its library first, about 4 ms: cci_core/digests.py has the interpreter's own SHA-256)
    http = {"http.client", "email.parser", "ssl", "ws4py", "logging", "_hashlib"}
    assert not imported & http, sorted(imported & http)
