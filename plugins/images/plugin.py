"""Registers ``cci build``. Image builders themselves are not implemented yet."""

from __future__ import annotations

from cci_core import hookimpl
from cci_core.cli.planned import planned_command
from cci_core.registry import Register


@hookimpl
def cci_register(register: Register) -> None:
    register.add_command(planned_command("build", "Build the cci image or a custom image"))
