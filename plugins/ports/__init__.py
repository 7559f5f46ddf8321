"""Published ports: ``[ports]`` and ``--port`` published at every start, and their paragraph of the sandbox brief."""
