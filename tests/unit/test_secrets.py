"""Secrets by placeholder: the placeholders, [secrets] and what plugins declare, and how a launch passes them.

What the proxy does with them (the real value toward the secret's hosts only) is tested against the
real proxy in tests/integration/test_proxy_egress.py.
"""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from cci_core.config import load_config
from cci_core.errors import ConfigError, PluginError
from cci_core.network_policy import NetworkPlan, ProxySpec
from cci_core.plugin_manager import load_plugins
from cci_core.registry import Registries, Register
from cci_core.secrets import (
    SecretSpec,
    Substitution,
    collect_secrets,
    header_problem,
    placeholder,
    placeholder_key,
)
from cci_core.session import LaunchRequest, SessionManager
from cci_builtin_plugins.tools.claude import API_KEY, ClaudeCode
from tests.fakes import FakeDriver

PROXY_PLAN = NetworkPlan("proxy", "x", "allow", (), proxy=ProxySpec(()))
ACL_PLAN = NetworkPlan("restricted", "", "allow", ())
KNOWN = {"GH_TOKEN": SecretSpec("GH_TOKEN", ("api.github.com",), ("Authorization: token {}",)), "ANTHROPIC_API_KEY": API_KEY}
REAL_KEY = "sk-ant-api03-REAL-abcdefghijklmnopqrstuvwxyz0123456789"


def user_config(home: Path, text: str) -> None:
    (home / ".config" / "cci").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "cci" / "config.toml").write_text(text)


def config_with(home: Path, text: str, workspace: Path):  # type: ignore[no-untyped-def]
    user_config(home, text)
    return load_config(workspace, environ={})


# --- placeholders ---------------------------------------------------------------------------------------------


def test_the_placeholder_key_is_made_once_private_and_kept(isolated_env: Path) -> None:
    key = placeholder_key()
    path = isolated_env / ".cci" / "secrets.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 64
    assert placeholder_key() == key
    assert [p.name for p in path.parent.iterdir()] == ["secrets.key"]  # no temporary file left


def test_processes_making_the_key_at_once_agree_on_one(isolated_env: Path) -> None:
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(placeholder_key())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys) == 8


def test_placeholders_are_stable_per_name_and_value_and_tell_nothing_of_the_value() -> None:
    one = placeholder("GH_TOKEN", "ghp_secret", key=b"k" * 32)
    assert one == placeholder("GH_TOKEN", "ghp_secret", key=b"k" * 32)
    assert one.startswith("cci-placeholder-") and len(one) == len("cci-placeholder-") + 32
    assert "secret" not in one
    assert one != placeholder("GITHUB_TOKEN", "ghp_secret", key=b"k" * 32)
    assert one != placeholder("GH_TOKEN", "ghp_other", key=b"k" * 32)
    assert one != placeholder("GH_TOKEN", "ghp_secret", key=b"j" * 32)


def test_a_substitution_never_shows_its_value() -> None:
    secret = Substitution("GH_TOKEN", "cci-placeholder-1", "ghp_real", ("api.github.com",), ("A: {}",))
    assert "ghp_real" not in repr(secret) and "ghp_real" not in str(secret)


# --- [secrets] and what plugins declare ---------------------------------------------------------------------


def test_named_variables_become_substitutions_with_their_hosts_and_headers(isolated_env: Path) -> None:
    config = config_with(isolated_env, '[secrets]\nenv = ["GH_TOKEN", "MY_TOKEN", "UNSET"]\n'
                                       'hosts = { MY_TOKEN = ["api.example.com"], UNSET = ["a.example.com"] }\n'
                                       'headers = { MY_TOKEN = ["X-Api-Key: {}"] }\n', isolated_env)
    warnings: list[str] = []
    found = collect_secrets(config, KNOWN, PROXY_PLAN, {"GH_TOKEN": "ghp_1", "MY_TOKEN": "my-2"}, None,
                            warnings.append)
    key = placeholder_key()
    assert found == [
        Substitution("GH_TOKEN", placeholder("GH_TOKEN", "ghp_1", key=key), "ghp_1", ("api.github.com",),
                     ("Authorization: token {}",)),
        Substitution("MY_TOKEN", placeholder("MY_TOKEN", "my-2", key=key), "my-2", ("api.example.com",),
                     ("X-Api-Key: {}",)),
    ]
    assert warnings == ["[secrets] env names UNSET, which is not set here: not passed"]


def test_a_variable_without_headers_is_sent_as_a_bearer_token(isolated_env: Path) -> None:
    config = config_with(isolated_env, '[secrets]\nenv = ["MY_TOKEN"]\nhosts = { MY_TOKEN = ["a.example.com"] }\n',
                         isolated_env)
    [secret] = collect_secrets(config, KNOWN, PROXY_PLAN, {"MY_TOKEN": "t"})
    assert secret.headers == ("Authorization: Bearer {}",)


@pytest.mark.parametrize(("text", "says"), [
    ('[secrets]\nenv = ["MY_TOKEN"]\n',
     'secrets.env: MY_TOKEN has no hosts it may be sent to (name them: [secrets] hosts = { MY_TOKEN = '
     '["api.example.com"] })'),
    ('[secrets]\nenv = ["MY_TOKEN"]\nhosts = { MY_TOKEN = [] }\n', "MY_TOKEN has no hosts it may be sent to"),
    ('[secrets]\nhosts = { OTHER = ["a.example.com"] }\n',
     "secrets.hosts: OTHER is not in [secrets] env, nor a secret a plugin declares"),
    ('[secrets]\nenv = ["GH_TOKEN"]\nheaders = { GH_TOKEN = ["Authorization: Bearer"] }\n',
     "needs exactly one '{}' (the value) or '{basic:USER}'"),
    ('[secrets]\nenv = ["GH_TOKEN"]\nheaders = { GH_TOKEN = ["Bad Name: {}"] }\n', "does not start with a header name"),
    ('[secrets]\nenv = ["GH_TOKEN"]\nheaders = { GH_TOKEN = ["A: {} {}"] }\n', "needs exactly one"),
    ('[secrets]\nenv = ["GH_TOKEN"]\nheaders = { GH_TOKEN = [] }\n', "GH_TOKEN: no header forms"),
])
def test_bad_secrets_are_one_line_naming_the_entry(isolated_env: Path, text: str, says: str) -> None:
    config = config_with(isolated_env, text, isolated_env)
    with pytest.raises(ConfigError) as caught:
        collect_secrets(config, KNOWN, PROXY_PLAN, {"MY_TOKEN": "t", "GH_TOKEN": "g"})
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_variable_name_is_refused_by_the_config(isolated_env: Path) -> None:
    user_config(isolated_env, '[secrets]\nenv = ["MY-TOKEN"]\n')
    with pytest.raises(ConfigError, match="secrets.env.*invalid environment variable name 'MY-TOKEN'"):
        load_config(isolated_env, environ={})


@pytest.mark.parametrize("value", ['abc"\nproxy_config_line', "abc proxy_config_line", "abc%{proxy_config_line}",
                                   "abc$proxy_config_line", "abc\\proxy_config_line", "abc\x7fproxy_config_line"])
def test_a_value_no_token_has_is_refused_without_showing_it(isolated_env: Path, value: str) -> None:
    config = config_with(isolated_env, '[secrets]\nenv = ["GH_TOKEN"]\n', isolated_env)
    with pytest.raises(ConfigError) as caught:
        collect_secrets(config, KNOWN, PROXY_PLAN, {"GH_TOKEN": value})
    assert "the value of GH_TOKEN has a character no token has" in str(caught.value)
    assert "proxy_config_line" not in str(caught.value)


@pytest.mark.parametrize("plan", [ACL_PLAN, None])
def test_secrets_under_a_mode_without_a_proxy_are_refused(isolated_env: Path, plan: NetworkPlan | None) -> None:
    config = config_with(isolated_env, '[secrets]\nenv = ["GH_TOKEN"]\n', isolated_env)
    with pytest.raises(ConfigError, match=r'secrets.env: \[secrets\] needs mode = "proxy"'):
        collect_secrets(config, KNOWN, plan, {"GH_TOKEN": "g"})


def test_without_a_proxy_the_tools_files_are_injected_as_they_are(isolated_env: Path) -> None:
    (isolated_env / ".claude.json").write_text(json.dumps({"primaryApiKey": REAL_KEY}))
    config = load_config(isolated_env, environ={})
    assert collect_secrets(config, KNOWN, ACL_PLAN, {}, ClaudeCode()) == []


@pytest.mark.parametrize("value", ["ghp_AbC123", "github_pat_11AB_cd", "sk-ant-api03-x_Y-z", "eyJ.eyJ.sig-_",
                                   "dXNlcjpwYXNz+/==", "user:pass@x~"])
def test_token_shaped_values_pass(isolated_env: Path, value: str) -> None:
    config = config_with(isolated_env, '[secrets]\nenv = ["GH_TOKEN"]\n', isolated_env)
    assert collect_secrets(config, KNOWN, PROXY_PLAN, {"GH_TOKEN": value})[0].value == value


def test_the_claude_api_key_of_its_config_is_a_secret_under_a_proxy(isolated_env: Path) -> None:
    (isolated_env / ".claude.json").write_text(json.dumps({"primaryApiKey": REAL_KEY, "theme": "dark"}))
    config = load_config(isolated_env, environ={})
    [secret] = collect_secrets(config, KNOWN, PROXY_PLAN, {}, ClaudeCode())
    assert (secret.name, secret.value, secret.hosts) == ("ANTHROPIC_API_KEY", REAL_KEY, ("api.anthropic.com",))
    assert secret.placeholder.startswith("sk-ant-api03-cci-placeholder-")
    assert secret.headers == ("x-api-key: {}", "Authorization: Bearer {}")


@pytest.mark.parametrize("content", ["", "not json", "[]", '{"primaryApiKey": 5}', '{"oauthAccount": {}}'])
def test_a_claude_config_without_an_api_key_gives_none(isolated_env: Path, content: str) -> None:
    if content:
        (isolated_env / ".claude.json").write_text(content)
    assert ClaudeCode().credential_secrets() == {}


@pytest.mark.parametrize(("header", "ok"), [
    ("Authorization: Bearer {}", True),
    ("Authorization: Basic {basic:x-access-token}", True),
    ("x-api-key: {}", True),
    ("Authorization: Bearer", False),
    ("Authorization Bearer {}", False),
    (": {}", False),
    ("A: {}\r\nInjected: 1", False),
    ("A: {basic:}", False),
    ("A: {x}", False),
    ('A: "{}"', False),
    ("A: %{}", False),
    ("A: {basic:us er}", False),
    ('A: {basic:u"}', False),
    ("A: Token={}; v=1", True),
])
def test_header_forms(header: str, ok: bool) -> None:
    assert (header_problem(header) is None) is ok


@pytest.mark.parametrize(("spec", "says"), [
    (SecretSpec("lower_ok", ("a.example.com",)), None),
    (SecretSpec("BAD-NAME", ("a.example.com",)), "invalid name 'BAD-NAME'"),
    (SecretSpec("T", ()), "names no hosts"),
    (SecretSpec("T", "a.example.com"), "names no hosts"),  # type: ignore[arg-type]
    (SecretSpec("T", ("a.example.com",), ("Authorization: Bearer",)), "needs exactly one"),
    (SecretSpec("T", ("a.example.com",), placeholder_prefix='x"y'), "placeholder prefix"),
])
def test_a_plugins_secret_spec_is_checked_at_registration(spec: SecretSpec, says: str | None) -> None:
    register = Register(Registries(), "mine")
    if says is None:
        register.add_secret(spec)
        return
    with pytest.raises(PluginError, match=says):
        register.add_secret(spec)


def test_presets_are_registered_checked_and_twice_is_refused() -> None:
    registries = Registries()
    Register(registries, "one").add_network_preset("mine", ["a.example.com"], "mine")
    with pytest.raises(PluginError, match="registered twice"):
        Register(registries, "two").add_network_preset("mine", ("b.example.com",))
    with pytest.raises(PluginError, match="without a list of host patterns"):
        Register(registries, "two").add_network_preset("other", "a.example.com")  # type: ignore[arg-type]
    assert registries.network_presets.get("mine").hosts == ("a.example.com",)


def test_the_builtin_plugins_declare_the_secrets_and_presets() -> None:
    registries = load_plugins(entry_points=False).registries
    assert sorted(registries.secret_specs()) == ["ANTHROPIC_API_KEY", "GH_TOKEN", "GITHUB_TOKEN"]
    assert registries.network_presets.names() == ["claude-code", "github", "package-registries"]


# --- a launch ---------------------------------------------------------------------------------------------------


class RoutingDriver(FakeDriver):
    """The fake driver, with a proxy that records the secrets it is given."""

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.routed: list[tuple[str, tuple[Substitution, ...]]] = []

    def route_secrets(self, network: str, substitutions: Sequence[Substitution]) -> None:
        assert network in self.networks, "secrets are routed after the network is made"
        self.routed.append((network, tuple(substitutions)))


PROXY_CONFIG = ('[defaults]\ndriver = "fake"\n[network]\nmode = "proxy"\nallowed_domains = ["api.anthropic.com"]\n'
                '[secrets]\nenv = ["GH_TOKEN"]\n')


def launched(home: Path, workspace: Path, text: str, environ: dict[str, str]):  # type: ignore[no-untyped-def]
    user_config(home, text)
    config = load_config(workspace, environ={})
    plugins = load_plugins(entry_points=False)
    driver = RoutingDriver(config)
    sessions = SessionManager(config, driver, plugins)
    return driver, sessions


def test_a_launch_under_a_proxy_routes_the_secrets_and_the_container_sees_placeholders_only(
        isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TOKEN", "ghp_realtoken123")
    (isolated_env / ".claude.json").write_text(json.dumps({"primaryApiKey": REAL_KEY, "theme": "dark"}))
    workspace = tmp_path / "w"
    workspace.mkdir()
    driver, sessions = launched(isolated_env, workspace, PROXY_CONFIG, {})
    container, ctx = sessions.launch(LaunchRequest(workspace))
    [(network, routed)] = driver.routed
    assert network == container.network  # type: ignore[attr-defined]
    by_name = {secret.name: secret for secret in routed}
    assert by_name["GH_TOKEN"].value == "ghp_realtoken123" and by_name["ANTHROPIC_API_KEY"].value == REAL_KEY
    assert ctx.environment["GH_TOKEN"] == by_name["GH_TOKEN"].placeholder
    assert "ANTHROPIC_API_KEY" not in ctx.environment  # (the tool reads its own file)
    injected = container.files["/home/code/.claude.json"][0]  # type: ignore[attr-defined]
    assert json.loads(injected)["primaryApiKey"] == by_name["ANTHROPIC_API_KEY"].placeholder
    everything = b"".join(data for data, *_ in container.files.values())  # type: ignore[attr-defined]
    assert REAL_KEY.encode() not in everything and b"ghp_realtoken123" not in everything
    assert "ghp_realtoken123" not in json.dumps(sessions.user_environment(ctx))
    assert all("ghp_realtoken123" not in value and REAL_KEY not in value for value in container.labels().values())


def test_a_placeholder_wins_over_a_real_value_set_elsewhere(isolated_env: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TOKEN", "ghp_realtoken123")
    driver, sessions = launched(isolated_env, tmp_path, PROXY_CONFIG + '[defaults.environment]\n'
                                'GH_TOKEN = "ghp_realtoken123"\n', {})
    _container, ctx = sessions.launch(LaunchRequest(tmp_path))
    assert ctx.environment["GH_TOKEN"].startswith("cci-placeholder-")


def test_a_launch_without_secrets_routes_nothing(isolated_env: Path, tmp_path: Path) -> None:
    driver, sessions = launched(isolated_env, tmp_path, '[defaults]\ndriver = "fake"\n[network]\nmode = "proxy"\n'
                                'allowed_domains = ["a.example.com"]\n', {})
    sessions.launch(LaunchRequest(tmp_path))
    assert driver.routed == []


def test_secrets_under_restricted_stop_the_launch_before_anything_is_made(isolated_env: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TOKEN", "ghp_realtoken123")
    driver, sessions = launched(isolated_env, tmp_path, '[defaults]\ndriver = "fake"\n[secrets]\nenv = ["GH_TOKEN"]\n',
                                {})
    with pytest.raises(ConfigError, match=r'\[secrets\] needs mode = "proxy"'):
        sessions.launch(LaunchRequest(tmp_path))
    assert driver.networks == {} and driver.containers == {} and driver.routed == []


# --- the command line ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "says"), [
    ('[network]\nmode = "proxy"\nallowed_domains = ["*."]\n', "network.allowed_domains: '*.': names no domain"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["*foo.com"]\n', "'*foo.com': has a '*' that is not a whole"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["https://api.github.com"]\n', "has a scheme"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["*"]\n', "a bare '*' would allow every host"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["a.example.com:70000"]\n', "the port 70000 is out of range"),
    ('[network]\nmode = "allowlist"\nallowed_domains = ["*."]\n', "'*.': names no domain"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["a.example.com"]\ndenied_domains = ["b.*"]\n',
     "network.denied_domains: 'b.*'"),
    ('[network]\nmode = "proxy"\npresets = ["nope"]\n', "unknown preset 'nope'; known: claude-code, github, "
                                                        "package-registries"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["a.example.com"]\n[secrets]\nenv = ["MY_TOKEN"]\n',
     "secrets.env: MY_TOKEN has no hosts it may be sent to"),
    ('[network]\nmode = "proxy"\nallowed_domains = ["a.example.com"]\n[secrets]\nenv = ["MY_TOKEN"]\n'
     'hosts = { MY_TOKEN = ["*.x"] }\n', "secrets.hosts (MY_TOKEN): '*.x'"),
    ('[secrets]\nenv = ["GH_TOKEN"]\n', '[secrets] needs mode = "proxy"'),
])
@pytest.mark.parametrize("command", [["shell"], ["run", "--", "true"]])
def test_bad_input_stops_the_command_with_one_line_before_anything_is_launched(
        isolated_env: Path, tmp_path: Path, text: str, says: str, command: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.cli.main import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("cci_core.cli.shell_cmds._require_terminal", lambda command: None)  # (as from a terminal)
    user_config(isolated_env, '[defaults]\ndriver = "nothing-here"\n' + text)  # any launch would fail differently
    result = CliRunner().invoke(cli, command, env={"GH_TOKEN": "ghp_x"}, catch_exceptions=False)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("cci: ") and says in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("text", "says"), [
    ('[secrets]\nhosts = { MY_TOKEN = "api.example.com" }\n',
     "secrets.hosts: expected a table of lists of strings, got string \"api.example.com\" for 'MY_TOKEN'"),
    ('[secrets]\nheaders = { MY_TOKEN = ["A: {}", 5] }\n',
     "secrets.headers: expected a table of lists of strings, got integer 5 at index 1 of 'MY_TOKEN'"),
])
def test_tables_of_lists_are_type_checked(isolated_env: Path, text: str, says: str) -> None:
    user_config(isolated_env, text)
    with pytest.raises(ConfigError) as caught:
        load_config(isolated_env, environ={})
    assert says in str(caught.value)


def test_a_reused_container_gets_its_secrets_routed_again_with_the_same_placeholders(
        isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TOKEN", "ghp_realtoken123")
    driver, sessions = launched(isolated_env, tmp_path, PROXY_CONFIG, {})
    container, first = sessions.launch(LaunchRequest(tmp_path, persistent=True))
    assert sessions.finish(container)
    reused = sessions.reuse(tmp_path)
    assert reused is not None and reused[0] is container
    assert len(driver.routed) == 2 and driver.routed[0] == driver.routed[1]
    assert reused[1].environment["GH_TOKEN"] == first.environment["GH_TOKEN"] != "ghp_realtoken123"
