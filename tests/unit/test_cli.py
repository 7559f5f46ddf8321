"""The command line: parsing, help, plugin commands, config display, and clean one-line errors."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cci_core.cli.main import cli
from tests import CCI_SCRIPT
from tests.fake_dists import install_fake_plugin
from tests.workspace_config import write_trusted

CRASHING_PLUGIN = """
    import click
    from cci_core import hookimpl

    @click.command()
    def crash():
        raise RuntimeError("bug in a plugin")

    @hookimpl
    def cci_register(register):
        register.add_command(crash)
"""


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Invoke cci as a user would; ``cwd`` becomes ``--workspace``."""
    workspace = ["--workspace", str(cwd)] if cwd else []
    return CliRunner().invoke(cli, [*workspace, *args], env=env)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


def test_version_is_the_distribution_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"cci {metadata.version('claude-code-isolated')}"


def test_help_lists_global_flags_core_and_plugin_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for flag in ("--workspace", "--slot", "--persistent", "--resume", "--continue", "--profile", "--image",
                 "--env", "--storage", "--network", "--tool", "--debug", "--version"):
        assert flag in result.output
    for command in ("shell", "attach", "run", "list", "shutdown", "kill", "clean", "container", "file", "image",
                    "config", "plugins", "completion", "build"):
        assert f"\n  {command} " in result.output


def test_session_flags_on_other_commands_are_refused() -> None:
    result = run("--slot", "2", "--resume=abc", "plugins", "list")
    assert result.exit_code == 2
    assert one_line(result.output) == "cci: --slot, --resume only applies to 'cci shell' and 'cci run', not 'cci plugins'"


def test_session_flags_reach_session_commands() -> None:
    result = run("--slot", "2", "--continue", "--persistent", "shell")
    # the flags parsed fine: what stops this run is the missing terminal, checked before anything is touched
    assert result.exit_code == 2
    assert one_line(result.output) == ("cci: 'cci shell' needs a terminal (for scripts and CI use "
                                       "'cci run -- CMD')")


@pytest.mark.parametrize("flag", ["--persistent", "--resume", "--continue=abc"])
def test_run_refuses_session_flags_before_touching_a_container(flag: str, tmp_path: Path) -> None:
    result = run("run", flag, "--", "true", cwd=tmp_path)
    assert result.exit_code == 2
    assert one_line(result.output) == f"cci: {flag.split('=')[0]} does not apply to 'cci run' (it always uses a fresh container)"


def test_run_needs_a_command_or_a_prompt() -> None:
    result = run("run")
    assert result.exit_code == 2
    assert one_line(result.output) == ("cci: give a COMMAND to run, or --prompt/--prompt-file for the tool "
                                       "('cci run -- CMD...', or 'cci run --prompt TEXT')")


@pytest.mark.parametrize("value", ["NOEQUALS", "1BAD=x", "=x"])
def test_bad_env_flag(value: str) -> None:
    result = run("--env", value, "config", "show")
    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.output
    assert "Traceback" not in result.output


def test_negative_slot_is_a_usage_error() -> None:
    assert run("--slot", "-1", "shell").exit_code == 2


def test_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.output


def test_config_show_names_every_source(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text('[defaults]\npersistent = true\n\n[network]\nmode = "open"\n')
    result = run("--image", "cci-rust", "--env", "FOO=bar", "config", "show", cwd=tmp_path,
                 env={"CCI_INCUS_CLAUDE_UID": "1001"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith('image = "cci-rust"') and line.endswith("# --image") for line in lines)
    assert any(line.startswith("persistent = true") and line.endswith(f"# {tmp_path}/.cci.toml:2") for line in lines)
    assert any(line.startswith('mode = "open"') and line.endswith(f"# {tmp_path}/.cci.toml:5") for line in lines)
    assert any(line.startswith("container_uid = 1001") and line.endswith("# env CCI_INCUS_CLAUDE_UID") for line in lines)
    assert any(line.startswith('name = "claude"') and line.endswith("# default") for line in lines)
    assert any(line.startswith('FOO = "bar"') and line.endswith("# --env") for line in lines)


def test_config_show_json(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text('[profiles.rust]\nimage = "cci-rust"\nenvironment = { RUST_BACKTRACE = "1" }\n')
    result = run("--profile", "rust", "config", "show", "--format", "json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["profile"] == "rust"
    assert data["values"]["defaults.image"]["value"] == "cci-rust"
    assert data["values"]["defaults.image"]["source"].startswith("profile rust")
    assert data["values"]["defaults.environment"]["value"] == {"RUST_BACKTRACE": "1"}


def test_config_path_lists_the_layers(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text("")
    result = run("config", "path", cwd=tmp_path)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == ["system", "user", "workspace"]
    assert lines[2].split()[1] == str(tmp_path / ".cci.toml") and "not present" not in lines[2]
    assert lines[1].endswith("(not present)")


def test_malformed_workspace_config_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text('[defaults]\nimage = "cci"\npersistent = \n')
    result = run("config", "show", cwd=tmp_path)
    assert result.exit_code == 2
    line = one_line(result.output)
    assert line.startswith(f"cci: {tmp_path}/.cci.toml:3") and "invalid TOML" in line


def test_wrong_type_is_one_line_with_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text('[incus]\nproject = "default"\nclaude_uid = "root"\n')
    result = run("plugins", "list", cwd=tmp_path)
    assert result.exit_code == 2
    assert one_line(result.output) == (
        f'cci: {tmp_path}/.cci.toml:3: incus.claude_uid: expected an integer, got string "root"'
    )


def test_unknown_key_warns_but_works(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text('[defaults]\nimgae = "x"\n')
    result = run("config", "show", cwd=tmp_path)
    assert result.exit_code == 0
    assert "cci: warning:" in result.output and "'defaults.imgae'" in result.output
    assert "did you mean 'defaults.image'" in result.output


def test_missing_workspace_is_exit_2(tmp_path: Path) -> None:
    result = run("--workspace", str(tmp_path / "nope"), "config", "show")
    assert result.exit_code == 2
    assert one_line(result.output) == f"cci: workspace {tmp_path}/nope does not exist"


def test_plugins_list_table_and_json(tmp_path: Path) -> None:
    write_trusted(tmp_path, '[plugins]\ndisabled = ["network-open"]\n')
    table = run("plugins", "list", cwd=tmp_path)
    assert table.exit_code == 0
    rows = [line.split() for line in table.output.splitlines()]
    assert rows[0] == ["NAME", "KIND", "DISTRIBUTION", "VERSION", "ENABLED"]
    assert ["incus", "driver", "claude-code-isolated", metadata.version("claude-code-isolated"), "yes"] in rows
    assert ["network-open", "-", "claude-code-isolated", metadata.version("claude-code-isolated"), "no"] in rows
    data = json.loads(run("plugins", "list", "--format", "json", cwd=tmp_path).output)
    by_name = {row["name"]: row for row in data}
    assert by_name["network-open"]["enabled"] is False
    assert by_name["claude"] == {
        "name": "claude", "kind": "tool", "distribution": "claude-code-isolated",
        "version": metadata.version("claude-code-isolated"), "enabled": True, "builtin": True,
        "module": "cci_builtin_plugins.tools.claude", "hooks": ["cci_register"], "provides": ["tool:claude"],
    }


def test_disabling_a_plugin_removes_its_command(tmp_path: Path) -> None:
    write_trusted(tmp_path, '[plugins]\ndisabled = ["images"]\n')
    result = run("build", cwd=tmp_path)
    assert result.exit_code == 2 and "No such command 'build'" in result.output
    assert "\n  build " not in run("--help", cwd=tmp_path).output


def test_broken_config_keeps_help_usable(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text("[defaults\n")
    result = run("--help", cwd=tmp_path)
    assert result.exit_code == 0
    assert "plugin commands are not listed" in result.output and "\n  shell " in result.output


def test_plugin_bug_is_an_internal_error_without_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_plugin(tmp_path / "site", monkeypatch, plugin="crasher", module="fake_crash_plugin",
                        source=CRASHING_PLUGIN, distribution="crash-dist")
    result = run("crash")
    assert result.exit_code == 70
    assert one_line(result.output) == (
        "cci: internal error: RuntimeError: bug in a plugin (run with --debug for a traceback)"
    )


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run("--debug", "--workspace", str(tmp_path / "missing"), "config", "show")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.output
    assert result.output.strip().endswith(f"cci: workspace {tmp_path}/missing does not exist")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    result = run("completion", shell)
    assert result.exit_code == 0
    assert "_CCI_COMPLETE" in result.output


def test_completion_completes_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(cli, [], env={"_CCI_COMPLETE": "bash_complete", "COMP_WORDS": "cci plu",
                                              "COMP_CWORD": "1"}, prog_name="cci")
    assert "plain,plugins" in result.output.splitlines()


def test_plugin_command_cannot_shadow_a_core_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_plugin(tmp_path / "site", monkeypatch, plugin="shadow", module="fake_shadow_plugin",
                        distribution="shadow-dist", source="""
        import click
        from cci_core import hookimpl

        @hookimpl
        def cci_register(register):
            register.add_command(click.Command("config"))
    """)
    result = run("frobnicate")
    assert result.exit_code == 3
    assert one_line(result.output) == (
        "cci: plugin 'shadow' registers command 'config', which is a core command"
    )


def test_system_config_layer_is_read(isolated_env: Path, tmp_path: Path) -> None:
    (isolated_env / "etc-cci-config.toml").write_text('[incus]\nproject = "from-etc"\n')
    result = run("config", "show", "--format", "json", cwd=tmp_path)
    value = json.loads(result.output)["values"]["incus.project"]
    assert value == {"value": "from-etc", "source": "~/etc-cci-config.toml:2"}  # HOME is isolated_env


def test_unknown_network_mode_is_refused_before_launch(tmp_path: Path) -> None:
    result = run("--network", "wide-open", "run", "--", "true", cwd=tmp_path)
    assert result.exit_code == 3
    assert one_line(result.output) == (
        "cci: network policy 'wide-open' is not available (plugin may not be installed); "
        "available: allowlist, open, proxy, restricted"
    )


def test_allowlist_without_domains_is_refused_before_launch(tmp_path: Path) -> None:
    result = run("--network", "allowlist", "run", "--", "true", cwd=tmp_path)
    assert result.exit_code == 2
    assert "allowlist mode needs at least one entry in allowed_domains" in result.output


def test_core_command_summaries_match_the_commands() -> None:
    """``cci --help`` lists core commands from CORE_COMMANDS without importing them: the texts must agree."""
    import importlib

    from cci_core.cli.group import CORE_COMMANDS

    for name, core in CORE_COMMANDS.items():
        command = getattr(importlib.import_module(core.module), core.attribute)
        assert command.get_short_help_str(limit=1000) == core.summary, name


def test_help_imports_no_core_command_module(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-X", "importtime", str(CCI_SCRIPT), "--help"], capture_output=True,
                            text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0 and "shell " in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not {module for module in imported if module.endswith(("_cmd", "_cmds"))}, sorted(imported)
    lazily_registered = {"cci_builtin_plugins.incus.driver", "cci_builtin_plugins.images.commands",
                         "cci_builtin_plugins.images.script_builder", "cci_builtin_plugins.images.debootstrap",
                         "cci_builtin_plugins.setup.command"}
    assert not imported & lazily_registered


def test_lazily_registered_command_summaries_match_the_commands() -> None:
    from cci_core.plugin_manager import load_plugins
    from cci_core.registry import Lazy

    commands = load_plugins(entry_points=False).registries.commands
    lazy = [entry for entry in commands.entries() if isinstance(entry.item, Lazy)]
    assert [entry.name for entry in lazy] == ["build", "setup"]
    for entry in lazy:
        assert commands.get(entry.name).get_short_help_str(limit=1000) == entry.item.summary


def test_pull_destinations_through_links_inside_the_workspace_are_refused_others_not(tmp_path: Path) -> None:
    from cci_core.cli.file_cmd import Remote, _pull_target
    from cci_core.errors import UsageError

    workspace, real = tmp_path / "ws", tmp_path / "real"
    workspace.mkdir()
    real.mkdir()
    (workspace / "planted").symlink_to(real)
    (tmp_path / "mine").symlink_to(real)  # the user's own link, outside the workspace
    source = Remote("c1", "/src/file")
    assert _pull_target(str(tmp_path / "mine" / "file"), source, workspace, False) == tmp_path / "mine" / "file"
    assert _pull_target(str(workspace / "sub" / "file"), source, workspace, False) == workspace / "sub" / "file"
    assert _pull_target(f"{tmp_path / 'mine'}/", source, workspace, False) == tmp_path / "mine" / "file"
    for destination, message in ((workspace / "planted" / "file", "goes through a symlink"),
                                 (f"{workspace / 'planted'}/", "goes through a symlink"),
                                 (workspace / "planted", "is a symlink"), (tmp_path / "mine", "is a symlink")):
        with pytest.raises(UsageError, match=message):
            _pull_target(str(destination), source, workspace, False)


@pytest.mark.parametrize("document", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 3000 + "1" + "}" * 3000,
                                      "[" + ".".join(["a"] * 100) + "]"])
@pytest.mark.parametrize("command", [("config", "show"), ("config", "trust"), ("plugins", "list")])
def test_a_config_nested_thousands_deep_is_one_line_exit_2(document: str, command: tuple[str, ...],
                                                           tmp_path: Path) -> None:
    """The agent can write the workspace's .cci.toml: no nesting makes every command crash (was RecursionError)."""
    (tmp_path / ".cci.toml").write_text(document + "\n")
    result = run(*command, cwd=tmp_path)
    assert result.exit_code == 2
    assert one_line(result.output) == (f"cci: {tmp_path}/.cci.toml: invalid config: tables or arrays nested more "
                                       "than 64 levels deep (flatten the file; cci's settings nest two levels)")
