"""``python -m cci_core`` runs the ``cci`` command line."""

from cci_core.cli.entry import main

main()
