"""Image building: the ``script`` and ``debootstrap`` builders and the ``cci build`` commands."""

from __future__ import annotations

from cci_core.api import Lazy, Register, hookimpl

#: ``cci build``'s short help, for ``cci --help`` without importing the command (a test keeps it equal)
BUILD_SUMMARY = "Build the cci image (Docker, Node.js, npm, Claude Code, gh, git, tmux, build tools)."


@hookimpl
def cci_register(register: Register) -> None:
    register.add_image_builder(Lazy("script", "cci_builtin_plugins.images.script_builder:ScriptBuilder"))
    register.add_image_builder(Lazy("debootstrap", "cci_builtin_plugins.images.debootstrap:DebootstrapBuilder"))
    register.add_command(Lazy("build", "cci_builtin_plugins.images.commands:build", BUILD_SUMMARY))
