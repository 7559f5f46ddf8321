"""OpenAI Codex CLI.

Flags and settings keys checked against Codex CLI 0.171.0 (npm
``@openai/codex``, the ``linux-x64`` build): its ``--help`` and
``codex resume --help`` list every flag used here, and ``--strict-config``
accepts the ``config.toml`` keys below (it rejects unknown ones). Without the
trust entry Codex stops at a "Trust this folder?" screen in a git workspace,
even with approvals bypassed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cci_core.api import WORKSPACE_PATH, CredentialFile, Register, ToolAdapter, hookimpl

#: run in the foreground only, with no approvals and no sandbox of its own: the container is the sandbox
_FLAGS = ("--no-daemon", "--dangerously-bypass-approvals-and-sandbox")


class Codex(ToolAdapter):
    """OpenAI's Codex CLI; everything it keeps (threads, config, auth) is under ``~/.codex``.

    Codex cannot start a thread under an id chosen by cci: it picks its own.
    So cci's session id names the saved copy of ``~/.codex``, not a Codex
    thread. A new session starts plain ``codex``; a resume runs
    ``codex resume --last`` after cci has put that copy back, which continues
    the most recent thread it holds (Codex starts a new one when there is
    none). In a persistent container that ran several cci sessions, that is
    the latest of them.
    """

    name = "codex"
    summary = "Codex CLI (OpenAI)"
    default_binary = "codex"
    state_dir = ".codex"
    credential_files = (CredentialFile("~/.codex/auth.json", ".codex/auth.json"),)
    #: ``auth.json`` holds an API key or the ChatGPT login's tokens
    secret_keys = frozenset({"OPENAI_API_KEY", "access_token", "refresh_token", "id_token"})

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        # session_id is not passed: Codex would look for a thread of that id and fail
        return [self.binary, *(["resume", "--last"] if resume else []), *_FLAGS]

    def sandbox_settings(self) -> Mapping[str, Mapping[str, Any]]:
        return {
            ".codex/config.toml": {
                "check_for_update_on_startup": False,  # the image decides the version
                "projects": {WORKSPACE_PATH: {"trust_level": "trusted"}},
            },
        }


@hookimpl
def cci_register(register: Register) -> None:
    register.add_tool(Codex)
