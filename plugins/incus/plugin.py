"""Registers the Incus driver. Importing this module does not import pylxd."""

from __future__ import annotations

from cci_core import hookimpl
from cci_core.registry import Register
from cci_builtin_plugins.incus.doctor import cci_doctor_checks  # noqa: F401  (the doctor hook)
from cci_builtin_plugins.incus.driver import IncusDriver


@hookimpl
def cci_register(register: Register) -> None:
    register.add_driver(IncusDriver)
