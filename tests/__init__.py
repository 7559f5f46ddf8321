"""cci's tests."""

import sys
from pathlib import Path

#: the installed ``cci`` console script: the supported entry point, as users run it
CCI_SCRIPT = Path(sys.executable).with_name("cci")
