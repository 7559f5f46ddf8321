"""A stand-in AI tool for cci's tests: a third-party tool plugin, installed from its own package.

Its program (:data:`SCRIPT`, POSIX sh) keeps one history file per session in
``~/.stand-in``: ``--new ID`` starts it, ``--resume ID`` continues it (and
fails when it is missing), and every line typed is appended and echoed as
``noted: <line>``. Headless (``--print``, the prompt on its standard input),
each prompt line is appended as ``prompt: <line>`` and answered as
``answer: <line>``; a line ``exit N`` makes it exit with N, ``stderr TEXT``
writes TEXT to its stderr, ``wait FILE`` waits for ``/workspace/FILE``;
``--json`` prints one JSON object instead of the answers.
"""

from __future__ import annotations

from pathlib import Path

from cci_core.api import CredentialFile, Register, ToolAdapter, hookimpl

#: the tool's program; tests put it in the workspace and point ``[tool] binary`` at it
SCRIPT = Path(__file__).with_name("stand-in.sh")


class StandIn(ToolAdapter):
    """The stand-in tool."""

    name = "stand-in"
    summary = "stand-in tool for cci's tests"
    default_binary = "cci-stand-in"
    state_dir = ".stand-in"
    brief_path = ".stand-in/BRIEF.md"
    credential_files = (CredentialFile("~/.stand-in/credentials.json", ".stand-in/credentials.json"),)
    secret_keys = frozenset({"token"})

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        return [self.binary, "--resume" if resume else "--new", session_id]

    def headless_command(self, session_id: str, *, resume: bool, structured: bool) -> list[str]:
        return [self.binary, "--print", *self.command(session_id, resume=resume)[1:],
                *(["--json"] if structured else [])]

    def sandbox_settings(self) -> dict[str, dict[str, object]]:
        return {".stand-in/settings.json": {"sandbox": {"trusted": True}}}


@hookimpl
def cci_register(register: Register) -> None:
    register.add_tool(StandIn)
