"""Claude Code, the default tool.

Flags and settings keys checked against Claude Code 2.1.332 (npm
``@anthropic-ai/claude-code-linux-x64``): its ``--help`` lists
``--dangerously-skip-permissions``, ``--session-id <uuid>`` and
``--resume [id]``; the keys below are the ones its binary reads, and with all
three set it starts straight at the prompt (without them it shows the
onboarding, the folder-trust dialog, or the bypass-permissions warning).

Headless (``cci run --prompt``): its print mode, checked with that binary in a
container as the container user. ``-p``/``--print`` reads the prompt from its
standard input when none is given as an argument (with none at all: "Input must
be provided either through stdin or as a prompt argument", exit 1);
``--output-format json`` prints one JSON result object (``session_id``,
``result``, ``is_error``...); ``--session-id`` and ``--resume`` work in print
mode as they do interactively (a ``--session-id`` already used is refused, so
a new headless session gets a new id). Without a login it prints "Not logged
in · Please run /login" on stdout (in the JSON object's ``result`` with
``--output-format json``) and exits 1 within a second, without the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cci_core.api import (
    WORKSPACE_PATH,
    CredentialFile,
    ImageFetch,
    ImageFile,
    Register,
    SecretSpec,
    ToolAdapter,
    hookimpl,
)

#: the hosts Claude Code needs, as its network-configuration page lists them
#: (https://code.claude.com/docs/en/network-config, "Network access requirements": the API, and the claude.ai and
#: Console logins); earlier versions of that page also listed statsig.anthropic.com (telemetry) and sentry.io (error
#: reports), which it runs without: sentry.io accepts reports for anyone's project, so it is left out
HOSTS = ("api.anthropic.com", "claude.ai", "platform.claude.com")

#: Claude's API key (``ANTHROPIC_API_KEY``, and ``primaryApiKey`` of ``~/.claude.json``): sent to the API only
API_KEY = SecretSpec("ANTHROPIC_API_KEY", ("api.anthropic.com",), ("x-api-key: {}", "Authorization: Bearer {}"),
                     summary="an Anthropic API key (Claude Code's primaryApiKey)",
                     placeholder_prefix="sk-ant-api03-cci-placeholder-")


class ClaudeCode(ToolAdapter):
    """Anthropic's Claude Code CLI, run with permission prompts off: the container is the sandbox.

    cci's session id is Claude's own: a new session starts with
    ``--session-id``, a resume continues it with ``--resume``.
    """

    name = "claude"
    summary = "Claude Code (Anthropic)"
    default_binary = "claude"
    state_dir = ".claude"
    #: Claude Code reads its user instructions ("user memory") from ``~/.claude/CLAUDE.md`` at start
    brief_path = ".claude/CLAUDE.md"
    credential_files = (
        CredentialFile("~/.claude/.credentials.json", ".claude/.credentials.json"),
        CredentialFile("~/.claude.json", ".claude.json"),
    )
    #: where Claude Code keeps secrets: the OAuth tokens of ``.credentials.json`` (``claudeAiOauth``), the API
    #: key of ``.claude.json`` (and its copies in ``~/.claude/backups/``) with the key suffixes it remembers,
    #: and keys or tokens set in a settings file's ``env``
    secret_keys = frozenset({"accessToken", "refreshToken", "primaryApiKey", "customApiKeyResponses",
                             "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"})

    def credential_secrets(self) -> Mapping[str, str]:
        """The API key of the host's ``~/.claude.json`` (``primaryApiKey``, set by an API-key login), if any."""
        import json
        from pathlib import Path

        try:
            with Path("~/.claude.json").expanduser().open("rb") as handle:
                document = json.loads(handle.read(4 << 20))
        except (OSError, ValueError, RecursionError):
            return {}
        key = document.get("primaryApiKey") if isinstance(document, dict) else None
        return {API_KEY.name: key} if isinstance(key, str) and key else {}

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        session = ["--resume", session_id] if resume else ["--session-id", session_id]
        return [self.binary, "--dangerously-skip-permissions", *session]

    def headless_command(self, session_id: str, *, resume: bool, structured: bool) -> list[str]:
        """Print mode (``--print``), the prompt read from standard input; ``--output-format json`` when structured."""
        return [*self.command(session_id, resume=resume), "--print",
                *(["--output-format", "json"] if structured else [])]

    def sandbox_settings(self) -> Mapping[str, Mapping[str, Any]]:
        return {
            # the global config: first-run onboarding done, the workspace trusted
            ".claude.json": {
                "hasCompletedOnboarding": True,
                "projects": {WORKSPACE_PATH: {"hasTrustDialogAccepted": True}},
            },
            # user settings: the bypass-permissions warning accepted (the older
            # bypassPermissionsModeAccepted in .claude.json is migrated to this key)
            ".claude/settings.json": {"skipDangerousModePermissionPrompt": True},
        }

    def image_version(self, fetch: ImageFetch) -> str:
        from cci_builtin_plugins.tools import claude_package

        return claude_package.resolve_version(claude_package.registry_url(fetch.registry), fetch.version)

    def image_files(self, version: str, fetch: ImageFetch, say: Callable[[str], None]) -> tuple[ImageFile, ...]:
        """The native ``claude`` of the npm package, verified and cached per version in the user's cache dir."""
        from pathlib import Path

        import platformdirs

        from cci_builtin_plugins.tools import claude_package

        cache = Path(platformdirs.user_cache_dir("cci")) / "claude-code"
        binary = claude_package.fetch_binary(claude_package.registry_url(fetch.registry), version, cache, say)
        return (ImageFile(claude_package.IMAGE_PATH, binary, 0o755),)


@hookimpl
def cci_register(register: Register) -> None:
    register.add_tool(ClaudeCode)
    register.add_network_preset("claude-code", HOSTS, "Claude Code: the Anthropic API and the claude.ai and Console logins")
    register.add_secret(API_KEY)
