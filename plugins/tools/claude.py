"""Claude Code, the default tool."""

from __future__ import annotations

from cci_core import hookimpl
from cci_core.registry import Register
from cci_core.tool import CredentialFile, ToolAdapter


class ClaudeCode(ToolAdapter):
    """Anthropic's Claude Code CLI, run with permission prompts off: the container is the sandbox."""

    name = "claude"
    summary = "Claude Code (Anthropic)"
    default_binary = "claude"
    state_dir = ".claude"
    credential_files = (
        CredentialFile("~/.claude/.credentials.json", ".claude/.credentials.json"),
        CredentialFile("~/.claude.json", ".claude.json"),
    )

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        session = ["--resume", session_id] if resume else ["--session-id", session_id]
        return [self.binary, "--dangerously-skip-permissions", *session]


@hookimpl
def cci_register(register: Register) -> None:
    register.add_tool(ClaudeCode)
