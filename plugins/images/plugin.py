"""Image building: the ``script`` and ``debootstrap`` builders and the ``cci build`` commands."""

from __future__ import annotations

from cci_core import hookimpl
from cci_core.registry import Register


@hookimpl
def cci_register(register: Register) -> None:
    from cci_builtin_plugins.images.commands import build
    from cci_builtin_plugins.images.debootstrap import DebootstrapBuilder
    from cci_builtin_plugins.images.script_builder import ScriptBuilder

    register.add_image_builder(ScriptBuilder)
    register.add_image_builder(DebootstrapBuilder)
    register.add_command(build)
