"""cci's tests."""

import subprocess
import sys
from pathlib import Path

#: the installed ``cci`` console script: the supported entry point, as users run it
CCI_SCRIPT = Path(sys.executable).with_name("cci")


def shellcheck(script: Path) -> subprocess.CompletedProcess[str]:
    """``shellcheck SCRIPT``; without shellcheck, a skip on a developer's machine and a failure in CI."""
    import os
    import shutil

    import pytest

    if shutil.which("shellcheck") is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is missing in CI (scripts/dev-setup installs it)")
        pytest.skip("shellcheck is not installed (scripts/dev-setup installs it)")
    return subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
