"""The built-in ``setup`` plugin: the ``cci setup`` command (see :mod:`.command`)."""

from __future__ import annotations

from cci_core.api import Lazy, Register, hookimpl

#: ``cci setup``'s short help, for ``cci --help`` without importing the command (a test keeps it equal)
SETUP_SUMMARY = "Prepare this machine for cci: Incus, storage, network, your access, the image (idempotent)."


@hookimpl
def cci_register(register: Register) -> None:
    register.add_command(Lazy("setup", "cci_builtin_plugins.setup.command:setup", SETUP_SUMMARY))
