"""The plugin manager: built-ins, entry points, blocking, validation and registration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cci_core import hookimpl
from cci_core.context import LaunchContext, Mount
from cci_core.errors import NotAvailableError, PluginError
from cci_core.plugin_manager import BUILTIN_PLUGINS, load_plugins
from cci_core.tool import ToolAdapter
from tests.fake_dists import install_fake_plugin

GOOD_PLUGIN = """
    from cci_core import hookimpl
    from cci_core.tool import ToolAdapter

    class Echo(ToolAdapter):
        name = "echo-tool"
        summary = "echo"
        default_binary = "echo"
        state_dir = ".echo"

        def command(self, session_id, *, resume):
            return [self.binary, session_id]

    @hookimpl
    def cci_register(register):
        register.add_tool(Echo)
"""


def make_tool(tool_name: str) -> type[ToolAdapter]:
    class Tool(ToolAdapter):
        name = tool_name
        summary = tool_name
        default_binary = tool_name
        state_dir = f".{tool_name}"

        def command(self, session_id: str, *, resume: bool) -> list[str]:
            return [self.binary]

    return Tool


class ToolPlugin:
    def __init__(self, tool: type[ToolAdapter]) -> None:
        self.tool = tool

    @hookimpl
    def cci_register(self, register):
        register.add_tool(self.tool)


def test_builtins_are_registered_with_what_they_provide() -> None:
    plugins = load_plugins(entry_points=False)
    assert [info.name for info in plugins.infos] == [name for name, _ in BUILTIN_PLUGINS]
    assert all(info.builtin and info.enabled and info.distribution == "claude-code-isolated" for info in plugins.infos)
    registries = plugins.registries
    assert registries.drivers.names() == ["incus"]
    assert registries.tools.names() == ["claude", "codex"]
    assert registries.network_policies.names() == ["allowlist", "open", "proxy", "restricted"]
    assert registries.commands.names() == ["build", "setup"]
    by_name = {info.name: info for info in plugins.infos}
    assert by_name["incus"].provides == ("driver:incus", "settings:incus")
    assert by_name["incus"].kind == "driver"
    assert by_name["claude"].hooks == ("cci_register",)


def test_loading_builtins_imports_neither_the_driver_nor_pylxd() -> None:
    for name in [module for module in sys.modules if module.startswith(("pylxd", "cci_builtin_plugins.incus"))]:
        del sys.modules[name]
    plugins = load_plugins(entry_points=False)
    assert "cci_builtin_plugins.incus.plugin" in sys.modules
    assert "cci_builtin_plugins.incus.driver" not in sys.modules  # registered lazily
    assert plugins.registries.drivers.get("incus").__name__ == "IncusDriver"
    assert "cci_builtin_plugins.incus.driver" in sys.modules and "pylxd" not in sys.modules


def test_disabled_builtin_is_blocked_before_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "cci_builtin_plugins.network.open", raising=False)
    plugins = load_plugins({"network-open"}, entry_points=False)
    assert "cci_builtin_plugins.network.open" not in sys.modules
    assert "open" not in plugins.registries.network_policies
    info = next(info for info in plugins.infos if info.name == "network-open")
    assert (info.enabled, info.kind, info.provides) == (False, "-", ())


def test_third_party_plugin_from_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_plugin(tmp_path, monkeypatch, plugin="echo", module="fake_echo_plugin", source=GOOD_PLUGIN)
    plugins = load_plugins()
    info = next(info for info in plugins.infos if info.name == "echo")
    assert (info.distribution, info.version, info.builtin, info.enabled) == ("fake-dist", "1.2", False, True)
    assert info.provides == ("tool:echo-tool",)
    tool = plugins.registries.tools.get("echo-tool")("/bin/echo")
    assert tool.command("abc", resume=False) == ["/bin/echo", "abc"]


def test_disabled_entry_point_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_plugin(tmp_path, monkeypatch, plugin="bomb", module="fake_bomb_plugin",
                        source="raise RuntimeError('imported although disabled')")
    plugins = load_plugins({"bomb"})
    assert "fake_bomb_plugin" not in sys.modules
    assert not next(info for info in plugins.infos if info.name == "bomb").enabled


def test_broken_entry_point_names_plugin_and_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_plugin(tmp_path, monkeypatch, plugin="broken", module="fake_broken_plugin",
                        source="import does_not_exist_anywhere", distribution="broken-dist", version="0.3")
    with pytest.raises(PluginError) as caught:
        load_plugins()
    message = str(caught.value)
    assert "plugin 'broken' (distribution broken-dist 0.3) failed to import" in message
    assert "ModuleNotFoundError" in message and "CCI_PLUGINS_DISABLED=broken" in message
    assert caught.value.exit_code == 3


def test_misspelled_hook_is_caught_with_a_suggestion() -> None:
    class Typo:
        @hookimpl
        def cci_pre_lauch(self, ctx):
            pass

    with pytest.raises(PluginError, match=r"plugin 'typo' implements unknown hook 'cci_pre_lauch'.*cci_pre_launch"):
        load_plugins(entry_points=False, extra=[("typo", Typo())])


def test_optional_unknown_hook_is_allowed() -> None:
    class Future:
        @hookimpl(optionalhook=True)
        def cci_some_future_hook(self):
            pass

    plugins = load_plugins(entry_points=False, extra=[("future", Future())])
    assert next(info for info in plugins.infos if info.name == "future").enabled


def test_hookimpl_with_unknown_argument_is_rejected() -> None:
    class BadArgs:
        @hookimpl
        def cci_mounts(self, context):
            return []

    with pytest.raises(PluginError, match="plugin 'bad-args'.*is invalid"):
        load_plugins(entry_points=False, extra=[("bad-args", BadArgs())])


def test_duplicate_registration_names_both_plugins() -> None:
    with pytest.raises(PluginError, match="tool 'claude' is registered twice: by plugin 'claude' and by plugin 'copycat'"):
        load_plugins(entry_points=False, extra=[("copycat", ToolPlugin(make_tool("claude")))])


def test_plugin_name_collision_with_builtin() -> None:
    with pytest.raises(PluginError, match="'incus'.*already registered"):
        load_plugins(entry_points=False, extra=[("incus", ToolPlugin(make_tool("x")))])


def test_reserved_plugin_name_is_refused() -> None:
    with pytest.raises(PluginError, match="reserved name"):
        load_plugins(entry_points=False, extra=[("disabled", ToolPlugin(make_tool("x")))])


def test_unknown_name_is_not_available() -> None:
    plugins = load_plugins(entry_points=False)
    with pytest.raises(NotAvailableError) as caught:
        plugins.registries.tools.get("aider")
    assert str(caught.value) == "tool 'aider' is not available (plugin may not be installed); available: claude, codex"


def test_failure_inside_register_is_a_plugin_error() -> None:
    class Crashes:
        @hookimpl
        def cci_register(self, register):
            raise KeyError("boom")

    with pytest.raises(PluginError, match="plugin 'crashes' failed to register: KeyError"):
        load_plugins(entry_points=False, extra=[("crashes", Crashes())])


def test_disabling_an_unknown_plugin_warns() -> None:
    warnings: list[str] = []
    load_plugins({"nope"}, entry_points=False, warn=warnings.append)
    assert warnings == ["plugin 'nope' is disabled in the config but is not installed"]


def test_lifecycle_hooks_collect_from_every_plugin(tmp_path: Path) -> None:
    class First:
        @hookimpl
        def cci_mounts(self, ctx):
            return [Mount("data", tmp_path, "/data")]

        @hookimpl
        def cci_environment(self, ctx):
            return {"A": ctx.container_name}

    class Second:
        @hookimpl
        def cci_environment(self):  # a subset of the spec's arguments is allowed
            return {"B": "2"}

    plugins = load_plugins(entry_points=False, extra=[("first", First()), ("second", Second())])
    ctx = LaunchContext(config=None, workspace=tmp_path, container_name="cci-x-1", slot=1,  # type: ignore[arg-type]
                        session_id="s", persistent=False, image="cci")
    assert plugins.hook.cci_environment(ctx=ctx) == [{"B": "2"}, {"A": "cci-x-1"}]
    assert plugins.hook.cci_mounts(ctx=ctx) == [[Mount("data", tmp_path, "/data")]]


def test_trace_env_var_traces_hook_calls(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CCI_TRACE_HOOKS", "1")
    load_plugins(entry_points=False)
    assert "cci_register" in capsys.readouterr().err
