"""OpenAI Codex CLI.

Flags and settings keys checked against Codex CLI 0.171.0 (npm
``@openai/codex``, the ``linux-x64`` build): its ``--help`` and
``codex resume --help`` list every flag used here, and ``--strict-config``
accepts the ``config.toml`` keys below (it rejects unknown ones). Without the
trust entry Codex stops at a "Trust this folder?" screen in a git workspace,
even with approvals bypassed.

Headless (``cci run --prompt``): ``codex exec``. Codex is not in cci's test
images, so this follows the source of its ``exec`` command line
(``codex-rs/exec/src/cli.rs``), not a run: a prompt argument ``-`` is read from
standard input, ``--json`` prints its events as JSON Lines on stdout,
``--skip-git-repo-check`` lets it run in a workspace that is no git
repository, ``--dangerously-bypass-approvals-and-sandbox`` is accepted by
``exec`` too, and ``exec resume --last`` continues the newest thread (the
``exec`` flags go before ``resume``, where every version takes them).
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
    #: Codex reads its global instructions from ``$CODEX_HOME/AGENTS.md`` (``~/.codex``) at start, unless an
    #: ``AGENTS.override.md`` is there
    brief_path = ".codex/AGENTS.md"
    credential_files = (CredentialFile("~/.codex/auth.json", ".codex/auth.json"),)
    #: ``auth.json`` holds an API key or the ChatGPT login's tokens
    secret_keys = frozenset({"OPENAI_API_KEY", "access_token", "refresh_token", "id_token"})

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        # session_id is not passed: Codex would look for a thread of that id and fail
        return [self.binary, *(["resume", "--last"] if resume else []), *_FLAGS]

    def headless_command(self, session_id: str, *, resume: bool, structured: bool) -> list[str]:
        """``codex exec``, the prompt (``-``) read from standard input; ``--json`` (JSON Lines events) when
        structured; a resume continues the newest thread of the restored ``~/.codex``, as :meth:`command` does."""
        return [self.binary, "exec", "--dangerously-bypass-approvals-and-sandbox", "--skip-git-repo-check",
                *(["--json"] if structured else []), *(["resume", "--last"] if resume else []), "-"]

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
