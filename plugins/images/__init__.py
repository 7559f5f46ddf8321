"""Built-in image builders and the ``cci build`` command."""
