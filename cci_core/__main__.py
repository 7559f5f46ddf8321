"""``python -m cci_core`` runs the ``cci`` command line.

``-m`` puts the current directory first on ``sys.path``. cci's current directory is
usually the workspace, which the agent in the container can write: a ``click.py``
or a ``*.dist-info`` entry point planted there would run on the host. So that entry
goes, before anything else is imported (as ``python -P`` does).
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from cci_core.cli.entry import main  # noqa: E402 - after the path is safe

main()
