"""The tool adapters: Claude Code and Codex (built in), and the stand-in tool (a third-party package)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, NamedTuple

import pytest

from cci_core.config import load_config
from cci_core.context import LaunchContext
from cci_core.plugin_manager import load_plugins
from cci_core.api import Setting
from cci_core.tool import CredentialFile, ToolAdapter
from cci_builtin_plugins.tools import settings_files, state
from cci_builtin_plugins.tools.claude import ClaudeCode
from cci_builtin_plugins.tools.codex import Codex
from tests.fakes import FakeContainer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SESSION = "3f1c2a7e-1b9e-4c5d-9a0e-123456789abc"
CCI = Path(sys.executable).with_name("cci")


def inject(tool: ToolAdapter, workspace: Path, container: FakeContainer) -> None:
    """Run the tool-state plugin's start-of-session step for ``tool``."""
    ctx = LaunchContext(config=load_config(workspace, environ={}), workspace=workspace, container_name="cci-0-1",
                        slot=1, session_id=SESSION, persistent=False, image="cci", tool=tool)
    state.cci_inject_credentials(ctx=ctx, container=container)


# --- Claude Code -------------------------------------------------------------------------------------------


def test_claude_starts_with_the_chosen_id_and_resumes_it() -> None:
    assert ClaudeCode().command(SESSION, resume=False) == [
        "claude", "--dangerously-skip-permissions", "--session-id", SESSION]
    assert ClaudeCode("/opt/bin/claude").command(SESSION, resume=True) == [
        "/opt/bin/claude", "--dangerously-skip-permissions", "--resume", SESSION]


def test_claude_runs_headless_in_print_mode_with_the_same_session_flags() -> None:
    assert ClaudeCode().headless_command(SESSION, resume=False, structured=False) == [
        "claude", "--dangerously-skip-permissions", "--session-id", SESSION, "--print"]
    assert ClaudeCode().headless_command(SESSION, resume=True, structured=True) == [
        "claude", "--dangerously-skip-permissions", "--resume", SESSION, "--print", "--output-format", "json"]


def test_claude_sandbox_settings_skip_onboarding_trust_and_bypass_prompts() -> None:
    assert ClaudeCode().sandbox_settings() == {
        ".claude.json": {"hasCompletedOnboarding": True, "projects": {"/workspace": {"hasTrustDialogAccepted": True}}},
        ".claude/settings.json": {"skipDangerousModePermissionPrompt": True},
    }


def test_claude_settings_merge_into_the_injected_global_config(tmp_path: Path, isolated_env: Path) -> None:
    (isolated_env / ".claude.json").write_text(json.dumps({
        "oauthAccount": {"emailAddress": "me@example.org"},
        "projects": {"/elsewhere": {"hasTrustDialogAccepted": False}},
    }))
    container = FakeContainer("cci-0-1")
    inject(ClaudeCode(), tmp_path, container)
    global_config = json.loads(container.files["/home/code/.claude.json"][0])
    assert global_config == {
        "oauthAccount": {"emailAddress": "me@example.org"},
        "hasCompletedOnboarding": True,
        "projects": {"/elsewhere": {"hasTrustDialogAccepted": False}, "/workspace": {"hasTrustDialogAccepted": True}},
    }
    assert json.loads(container.files["/home/code/.claude/settings.json"][0]) == {
        "skipDangerousModePermissionPrompt": True}


# --- Codex -------------------------------------------------------------------------------------------------


def test_codex_starts_new_and_resumes_the_latest_thread_of_the_restored_state() -> None:
    flags = ["--no-daemon", "--dangerously-bypass-approvals-and-sandbox"]
    assert Codex().command(SESSION, resume=False) == ["codex", *flags]
    assert Codex("/usr/local/bin/codex").command(SESSION, resume=True) == [
        "/usr/local/bin/codex", "resume", "--last", *flags]


def test_codex_runs_headless_with_exec_reading_the_prompt_from_standard_input() -> None:
    flags = ["exec", "--dangerously-bypass-approvals-and-sandbox", "--skip-git-repo-check"]
    assert Codex().headless_command(SESSION, resume=False, structured=False) == ["codex", *flags, "-"]
    assert Codex().headless_command(SESSION, resume=True, structured=True) == [
        "codex", *flags, "--json", "resume", "--last", "-"]


def test_codex_credentials_live_in_its_state_dir_and_are_stripped_from_saves(tmp_path: Path) -> None:
    from cci_core.tree_copy import copy_tree, walk_entries, LIMITS

    assert Codex.credential_files == (CredentialFile("~/.codex/auth.json", ".codex/auth.json"),)
    assert {"OPENAI_API_KEY", "access_token", "refresh_token", "id_token"} <= Codex.secret_keys
    tree = tmp_path / ".codex"
    (tree / "sessions").mkdir(parents=True)
    (tree / "auth.json").write_text("{}")
    (tree / "sessions" / "rollout.jsonl").write_text("{}")
    copy = tmp_path / "copy"
    copy_tree(walk_entries(tree, LIMITS), copy, state.copy_policy(Codex()))
    assert sorted(path.name for path in copy.rglob("*")) == ["rollout.jsonl", "sessions"]


def test_codex_trust_is_merged_into_its_toml_config(tmp_path: Path) -> None:
    container = FakeContainer("cci-0-1")
    container.push_file("/home/code/.codex/config.toml",
                        b'model = "o3"\n\n[projects."/home/code/other"]\ntrust_level = "untrusted"\n\n'
                        b"[tui]\nscreen_reader_detection_done = true\n")
    inject(Codex(), tmp_path, container)
    data, mode, uid, _gid = container.files["/home/code/.codex/config.toml"]
    assert (mode, uid) == (0o600, 1000)
    assert tomllib.loads(data.decode()) == {
        "model": "o3",
        "check_for_update_on_startup": False,
        "projects": {"/home/code/other": {"trust_level": "untrusted"}, "/workspace": {"trust_level": "trusted"}},
        "tui": {"screen_reader_detection_done": True},
    }


def test_a_broken_toml_config_is_replaced_by_the_sandbox_settings(tmp_path: Path) -> None:
    container = FakeContainer("cci-0-1")
    container.push_file("/home/code/.codex/config.toml", b"[projects\n")
    inject(Codex(), tmp_path, container)
    assert tomllib.loads(container.files["/home/code/.codex/config.toml"][0].decode()) == Codex().sandbox_settings()[
        ".codex/config.toml"]


def test_a_settings_file_cci_cannot_read_is_replaced_by_the_sandbox_settings(tmp_path: Path) -> None:
    """The agent can make it a FIFO, a device or a huge file: injecting credentials (every resume) goes on."""
    from cci_core.errors import UsageError

    container = FakeContainer("cci-0-1")

    def refused(path: str) -> bytes:
        raise UsageError(f"cci-0-1:{path} is a fifo")

    container.pull_file = refused  # type: ignore[method-assign]
    inject(Codex(), tmp_path, container)
    assert tomllib.loads(container.files["/home/code/.codex/config.toml"][0].decode()) == Codex().sandbox_settings()[
        ".codex/config.toml"]


# --- settings files ----------------------------------------------------------------------------------------


def test_toml_writer_round_trips_what_tomllib_reads() -> None:
    document = {
        "title": 'a "quoted"\tname\x7f é',
        "count": -3,
        "ratio": 0.5,
        "big": float("inf"),
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2026, 1, 2),
        "list": [1, "two", [3.0, False], {"inline": True}],
        "empty": {},
        "projects": {"/workspace": {"trust_level": "trusted", "nested": {"deep": ["x"]}}, "plain-key_1": {}},
        "servers": [{"name": "a", "env": {"X": "1"}}, {"name": "b"}],
    }
    text = settings_files.toml_text(document)
    assert tomllib.loads(text) == document
    assert '\n[projects."/workspace"]\ntrust_level = "trusted"\n' in text


def test_top_level_keys_come_before_any_table() -> None:
    assert settings_files.toml_text({"a": {"b": 1}, "c": 2}) == "c = 2\n\n[a]\nb = 1\n"


def test_json_stays_json_and_a_bad_file_is_a_value_error() -> None:
    assert settings_files.render("x/settings.json", {"a": {"b": True}}) == b'{\n  "a": {\n    "b": true\n  }\n}\n'
    assert settings_files.parse("x/settings.json", b'{"a": 1}') == {"a": 1}
    with pytest.raises(ValueError):
        settings_files.parse("x/config.toml", b"a = ")
    with pytest.raises(ValueError):
        settings_files.parse("x/settings.json", b"a = 1")
    with pytest.raises(TypeError, match="cannot write set"):
        settings_files.toml_text({"a": {1, 2}})


# --- built-in registration ---------------------------------------------------------------------------------


def test_both_adapters_are_built_in_tools() -> None:
    plugins = load_plugins(entry_points=False)
    assert plugins.registries.tools.get("claude") is ClaudeCode
    assert plugins.registries.tools.get("codex") is Codex
    codex = next(info for info in plugins.infos if info.name == "codex")
    assert (codex.builtin, codex.module, codex.provides) == (True, "cci_builtin_plugins.tools.codex", ("tool:codex",))


# --- the stand-in tool package (tests/plugins/cci-stand-in-tool, installed by scripts/dev-setup) -----------


def test_stand_in_is_found_through_its_entry_point(tmp_path: Path) -> None:
    listing = subprocess.run([str(CCI), "--workspace", str(tmp_path), "plugins", "list", "--format", "json"],
                             capture_output=True, text=True, check=False)
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["stand-in"]["distribution"] == "cci-stand-in-tool", "run scripts/dev-setup to install it"
    assert (rows["stand-in"]["builtin"], rows["stand-in"]["enabled"]) == (False, True)
    assert (rows["stand-in"]["module"], rows["stand-in"]["provides"]) == ("cci_stand_in_tool", ["tool:stand-in"])
    assert (rows["codex"]["distribution"], rows["codex"]["builtin"]) == ("claude-code-isolated", True)


def test_stand_in_adapter_from_the_entry_point() -> None:
    tool_class = load_plugins().registries.tools.get("stand-in")
    tool = tool_class()
    assert (tool.binary, tool.state_dir) == ("cci-stand-in", ".stand-in")
    assert tool.credential_files == (CredentialFile("~/.stand-in/credentials.json", ".stand-in/credentials.json"),)
    assert tool.command("id-1", resume=False) == ["cci-stand-in", "--new", "id-1"]
    assert tool.command("id-1", resume=True) == ["cci-stand-in", "--resume", "id-1"]
    assert tool.headless_command("id-1", resume=True, structured=True) == [
        "cci-stand-in", "--print", "--resume", "id-1", "--json"]
    assert tool.sandbox_settings() == {".stand-in/settings.json": {"sandbox": {"trusted": True}}}


def stand_in(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    from cci_stand_in_tool import SCRIPT

    return subprocess.run(["sh", str(SCRIPT), *args], input=stdin, capture_output=True, text=True, check=False,
                          env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def test_stand_in_script_keeps_one_history_per_session(tmp_path: Path) -> None:
    history = tmp_path / ".stand-in" / "history-s1.txt"
    missing = stand_in(tmp_path, "--resume", "s1")
    assert (missing.returncode, missing.stdout) == (3, "")
    assert "no session s1" in missing.stderr and not history.exists()

    new = stand_in(tmp_path, "--new", "s1", stdin="first line\n")
    assert (new.returncode, new.stdout) == (0, "started s1\nnoted: first line\n")
    resumed = stand_in(tmp_path, "--resume", "s1", stdin="second\n")
    assert (resumed.returncode, resumed.stdout) == (0, "started s1\nfirst line\nresumed s1\nnoted: second\n")
    assert history.read_text() == "started s1\nfirst line\nresumed s1\nsecond\n"


def test_stand_in_script_answers_a_headless_prompt_with_the_code_it_names(tmp_path: Path) -> None:
    new = stand_in(tmp_path, "--print", "--new", "s1", stdin="hello\nstderr to stderr\nexit 7")
    assert (new.returncode, new.stdout, new.stderr) == (7, "answer: hello\nanswer: stderr to stderr\nanswer: exit 7\n",
                                                        "to stderr\n")
    structured = stand_in(tmp_path, "--print", "--resume", "s1", "--json", stdin="more\n")
    assert (structured.returncode, structured.stdout) == (0, '{"session_id": "s1", "lines": 1, "exit_code": 0}\n')
    assert (tmp_path / ".stand-in" / "history-s1.txt").read_text() == (
        "started s1\nprompt: hello\nprompt: stderr to stderr\nprompt: exit 7\nresumed s1\nprompt: more\n")


@pytest.mark.parametrize(("path", "data"), [("x/settings.json", b"[" * 100_000 + b"]" * 100_000),
                                            ("x/settings.json", b'{"a":' * 70 + b"1" + b"}" * 70),
                                            ("x/config.toml", b"a = " + b"[" * 5000 + b"]" * 5000)])
def test_a_settings_file_nested_too_deep_is_a_value_error(path: str, data: bytes) -> None:
    """The container writes its settings files: one nested too deep is replaced (a ValueError), never a crash."""
    with pytest.raises(ValueError, match="nests more than 64 levels deep"):
        settings_files.parse(path, data)


# --- a third-party tool reading the config section its plugin declares --------------------------------------


class ModelSettings(NamedTuple):
    model: Annotated[str, Setting("The model to start with.")] = "small"


class ModelTool(ToolAdapter):
    name, summary, default_binary, state_dir = "modeltool", "a tool with a setting", "modeltool", ".modeltool"

    def command(self, session_id: str, *, resume: bool) -> list[str]:
        assert self.config is not None
        return [self.binary, "--model", self.config.section("modeltool").model, session_id]


def test_a_tool_reads_its_own_config_section_when_its_session_starts(tmp_path: Path) -> None:
    from cci_core.api import hookimpl
    from cci_core.config import Override
    from cci_core.session import LaunchRequest, SessionManager
    from tests.fakes import FakeDriver

    class ModelPlugin:
        @hookimpl
        def cci_register(self, register):  # type: ignore[no-untyped-def]
            register.add_settings("modeltool", ModelSettings)
            register.add_tool(ModelTool)
            register.add_driver(FakeDriver)

    (tmp_path / ".cci.toml").write_text('[modeltool]\nmodel = "large"\n')
    plugins = load_plugins(entry_points=False, extra=[("modeltool", ModelPlugin())])
    config = load_config(tmp_path, environ={}, plugins=plugins, user_file=tmp_path / "none.toml",
                         overrides=[Override("defaults.driver", "fake", "test"), Override("tool.name", "modeltool", "t")])
    opened = SessionManager(config, FakeDriver(config), plugins).open(LaunchRequest(tmp_path))
    assert opened.command == ["modeltool", "--model", "large", opened.ctx.session_id]
