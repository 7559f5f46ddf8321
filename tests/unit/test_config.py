"""Unit tests for cci_core.config: layering, sources, validation, warnings and rendering."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import pytest

from cci_core import hookimpl

from cci_core.config.render import render_toml, to_json
from cci_core.config import (
    Config,
    DefaultsConfig,
    NetworkConfig,
    Override,
    ProfileConfig,
    load_config,
    user_config_file,
)
from cci_core.config.schema import (
    ENV_VARS,
    PLUGIN_LISTS,
    PROFILE_TARGETS,
    SETTINGS,
    Schema,
    Setting,
    non_empty,
    non_negative,
)
from cci_core.errors import ConfigError, NotAvailableError, PluginError
from cci_core.plugin_manager import load_plugins


class Layers:
    """Config files under tmp_path plus a loader that never reads the real machine."""

    def __init__(self, tmp_path: Path) -> None:
        self.workspace = tmp_path / "ws"
        self.workspace.mkdir()
        self.system = tmp_path / "etc" / "config.toml"
        self.user = tmp_path / "home" / ".config" / "cci" / "config.toml"
        self.project = self.workspace / ".cci.toml"
        self.warnings: list[str] = []

    def write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def load(self, **kwargs: Any) -> Config:
        kwargs.setdefault("environ", {})
        kwargs.setdefault("system_file", self.system)
        kwargs.setdefault("user_file", self.user)
        kwargs.setdefault("warn", self.warnings.append)
        return load_config(kwargs.pop("workspace", self.workspace), **kwargs)

    def error(self, **kwargs: Any) -> ConfigError:
        with pytest.raises(ConfigError) as info:
            self.load(**kwargs)
        return info.value


@pytest.fixture
def layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layers:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return Layers(tmp_path)


# -- defaults and layering ------------------------------------------------------------------------------


def test_defaults_without_files(layers: Layers) -> None:
    config = layers.load()
    assert config.defaults.image == "cci"
    assert config.defaults.persistent is False
    assert config.defaults.inject_credentials is True
    assert config.defaults.environment == {}
    assert config.defaults.driver == "incus"
    assert (config.tool.name, config.tool.binary) == ("claude", None)
    assert config.paths.sessions_dir == "~/.cci/sessions"
    assert config.paths.storage_dir == "~/.cci/storage"
    assert (config.section("incus").project, config.section("incus").group, config.section("incus").container_uid) == ("default", "incus-admin", 1000)
    assert config.section("incus").socket is None
    assert (config.network.mode, config.network.allowed_domains) == ("restricted", [])
    assert config.network.refresh_interval_minutes == 30
    assert config.plugins.disabled == frozenset()
    assert config.files == ()
    assert config.profile is None
    assert config.workspace == layers.workspace.resolve()
    assert config.source_of("defaults.image") == "default"
    assert config.source_of("plugins.disabled") == "default"
    assert layers.warnings == []


def test_config_is_frozen(layers: Layers) -> None:
    config = layers.load()
    with pytest.raises(AttributeError):
        config.defaults.image = "other"  # type: ignore[misc]


def test_loaded_configs_do_not_share_mutable_defaults(layers: Layers) -> None:
    first, second = layers.load(), layers.load()
    first.defaults.environment["A"] = "1"
    first.network.allowed_domains.append("x.org")
    assert (second.defaults.environment, second.network.allowed_domains) == ({}, [])
    assert (DefaultsConfig().environment, NetworkConfig().allowed_domains) == ({}, [])


def test_import_skips_modules_the_fast_path_does_not_need() -> None:
    unneeded = "{'copy', 'dataclasses', 'difflib', 'json', 'tomllib'}"
    code = f"import sys, cci_core.config; print(sorted({unneeded} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "[]"


def test_schema_metadata_is_derived_from_annotations() -> None:
    assert SETTINGS["defaults.image"].help == "Container image to launch."
    assert SETTINGS["defaults.inject_credentials"].aliases == ("mount_claude_config",)
    incus = Schema(load_plugins(entry_points=False).registries.config_sections()).settings
    assert incus["incus.container_uid"].check is non_negative and incus["incus.container_uid"].aliases == ("claude_uid",)
    assert incus["incus.socket"].type == str | None
    assert SETTINGS["defaults.environment"].is_table
    assert SETTINGS["paths.sessions_dir"].deprecated == "sessions are stored in ~/.cci/sessions-<tool>/"
    assert PROFILE_TARGETS["network"] is SETTINGS["network.mode"]
    assert list(PLUGIN_LISTS) == ["plugins.disabled", "plugins.enabled"]


def _write_all_layers(layers: Layers) -> None:
    layers.write(layers.system, '[defaults]\nimage = "system"\n[incus]\nproject = "sys"\n')
    layers.write(layers.user, '[defaults]\n\nimage = "user"\n')
    layers.write(layers.project, '[profiles.p]\nimage = "profile"\n\n[defaults]\nimage = "project"\n')


LAYER_CASES = [
    ({}, "project", "{ws}/.cci.toml:5"),
    ({"profile": "p"}, "profile", "profile p ({ws}/.cci.toml:2)"),
    ({"profile": "p", "environ": {"CCI_DEFAULTS_IMAGE": "env"}}, "env", "env CCI_DEFAULTS_IMAGE"),
    (
        {
            "profile": "p",
            "environ": {"CCI_DEFAULTS_IMAGE": "env"},
            "overrides": [Override("defaults.image", "cli", "--image")],
        },
        "cli",
        "--image",
    ),
]


@pytest.mark.parametrize(("kwargs", "image", "source"), LAYER_CASES)
def test_upper_layers_override_files(layers: Layers, kwargs: dict[str, Any], image: str, source: str) -> None:
    _write_all_layers(layers)
    config = layers.load(**kwargs)
    assert config.defaults.image == image
    assert config.source_of("defaults.image") == source.format(ws=layers.workspace)
    assert config.section("incus").project == "sys"  # untouched by upper layers
    assert config.source_of("incus.project") == f"{layers.system}:4"


def test_user_file_overrides_system_and_source_shortens_home(layers: Layers) -> None:
    layers.write(layers.system, '[defaults]\nimage = "system"\npersistent = true\n')
    layers.write(layers.user, '[defaults]\n\nimage = "user"\n')
    config = layers.load()
    assert config.defaults.image == "user"
    assert config.source_of("defaults.image") == "~/.config/cci/config.toml:3"
    assert config.defaults.persistent is True
    assert config.source_of("defaults.persistent") == f"{layers.system}:3"
    assert config.files == (layers.system, layers.user)


def test_workspace_file_overrides_user(layers: Layers) -> None:
    layers.write(layers.user, "[defaults]\npersistent = true\nmount_claude_config = false\n")
    layers.write(layers.project, "[defaults]\npersistent = false\n")
    config = layers.load()
    assert config.defaults.persistent is False
    assert config.defaults.inject_credentials is False
    assert config.files == (layers.user, layers.project)


def test_workspace_symlink_is_resolved(layers: Layers, tmp_path: Path) -> None:
    layers.write(layers.project, '[tool]\nname = "aider"\n')
    link = tmp_path / "link"
    link.symlink_to(layers.workspace)
    config = layers.load(workspace=link)
    assert config.workspace == layers.workspace.resolve()
    assert config.tool.name == "aider"
    assert config.files == (layers.workspace.resolve() / ".cci.toml",)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_bad_workspace_is_an_error(layers: Layers, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "nowhere"
    if kind == "file":
        target.write_text("")
    error = layers.error(workspace=target)
    assert str(target) in str(error)
    assert ("does not exist" if kind == "missing" else "is not a directory") in str(error)
    assert error.exit_code == 2


def test_unreadable_file_is_an_error_naming_it(layers: Layers) -> None:
    layers.user.mkdir(parents=True)  # a directory where the file should be
    error = layers.error()
    assert error.source == "~/.config/cci/config.toml"
    assert "cannot read config file" in str(error)


def test_user_config_file_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_config_file() == tmp_path / "xdg" / "cci" / "config.toml"


# -- profiles -------------------------------------------------------------------------------------------


def test_profile_selected_by_argument(layers: Layers) -> None:
    layers.write(
        layers.user,
        """
        [profiles.rust]
        image = "cci-rust"
        persistent = true
        tool = "aider"
        network = "open"
        """,
    )
    config = layers.load(profile="rust")
    assert config.profile == "rust"
    assert (config.defaults.image, config.defaults.persistent) == ("cci-rust", True)
    assert (config.tool.name, config.network.mode) == ("aider", "open")
    assert config.source_of("tool.name") == "profile rust (~/.config/cci/config.toml:4)"
    assert config.profiles["rust"] == ProfileConfig(image="cci-rust", persistent=True, tool="aider", network="open")


def test_profile_not_applied_unless_selected(layers: Layers) -> None:
    layers.write(layers.user, '[profiles.rust]\nimage = "cci-rust"\n')
    config = layers.load()
    assert config.defaults.image == "cci"
    assert config.profile is None
    assert "rust" in config.profiles


def test_profile_selected_by_env_and_argument_wins(layers: Layers) -> None:
    layers.write(layers.user, '[profiles.a]\nimage = "A"\n[profiles.b]\nimage = "B"\n')
    assert layers.load(environ={"CCI_PROFILE": "a"}).defaults.image == "A"
    config = layers.load(profile="b", environ={"CCI_PROFILE": "a"})
    assert (config.profile, config.defaults.image) == ("b", "B")


def test_profiles_merge_across_files(layers: Layers) -> None:
    layers.write(layers.system, '[profiles.rust]\nimage = "sys-rust"\nmount_claude_config = false\n')
    layers.write(layers.user, '[profiles.rust]\nimage = "user-rust"\nenvironment = { A = "1", B = "1" }\n')
    layers.write(layers.project, '[profiles.rust]\npersistent = true\nenvironment = { B = "2" }\n')
    config = layers.load(profile="rust")
    assert config.defaults.image == "user-rust"
    assert config.defaults.inject_credentials is False
    assert config.defaults.persistent is True
    assert config.defaults.environment == {"A": "1", "B": "2"}
    assert config.profiles["rust"].environment == {"A": "1", "B": "2"}
    assert config.source_of("defaults.image") == "profile rust (~/.config/cci/config.toml:2)"


def test_profile_environment_merges_into_defaults(layers: Layers) -> None:
    layers.write(
        layers.user,
        """
        [defaults]
        environment = { KEEP = "x", RUST_BACKTRACE = "0" }

        [profiles.rust]
        environment = { RUST_BACKTRACE = "1" }
        """,
    )
    config = layers.load(profile="rust")
    assert config.defaults.environment == {"KEEP": "x", "RUST_BACKTRACE": "1"}
    assert config.source_of("defaults.environment.KEEP") == "~/.config/cci/config.toml:2"
    assert config.source_of("defaults.environment.RUST_BACKTRACE").startswith("profile rust (")


@pytest.mark.parametrize("by_env", [False, True])
def test_unknown_profile_lists_available(layers: Layers, by_env: bool) -> None:
    layers.write(layers.user, '[profiles.rust]\nimage = "r"\n[profiles.python]\nimage = "p"\n')
    kwargs: dict[str, Any] = {"environ": {"CCI_PROFILE": "go"}} if by_env else {"profile": "go"}
    error = layers.error(**kwargs)
    assert "unknown profile 'go'" in str(error)
    assert "python, rust" in str(error)
    assert error.source == ("env CCI_PROFILE" if by_env else None)


def test_unknown_profile_without_profiles(layers: Layers) -> None:
    assert "none defined" in str(layers.error(profile="x"))


# -- environment tables ---------------------------------------------------------------------------------


def test_environment_merges_per_key_across_layers(layers: Layers) -> None:
    layers.write(layers.system, '[defaults]\nenvironment = { A = "sys", B = "sys" }\n')
    layers.write(layers.user, '[defaults.environment]\nB = "user"\nC = "user"\n')
    layers.write(layers.project, '[defaults]\nenvironment = { C = "project" }\n')
    overrides = [
        Override("defaults.environment", {"D": "cli"}, "--env"),
        Override("defaults.environment.A", "a", "--env"),
    ]
    config = layers.load(overrides=overrides)
    assert config.defaults.environment == {"A": "a", "B": "user", "C": "project", "D": "cli"}
    assert config.source_of("defaults.environment.B") == "~/.config/cci/config.toml:2"
    assert config.source_of("defaults.environment.A") == "--env"
    with pytest.raises(KeyError):
        config.source_of("defaults.environment.NOPE")


@pytest.mark.parametrize("where", ["defaults", "profile", "override"])
def test_environment_bad_name_rejected(layers: Layers, where: str) -> None:
    if where == "defaults":
        layers.write(layers.user, '[defaults]\nenvironment = { "BAD-NAME" = "1" }\n')
        kwargs: dict[str, Any] = {}
    elif where == "profile":
        layers.write(layers.user, '[profiles.x]\nenvironment = { "1BAD" = "1" }\n')
        kwargs = {}
    else:
        kwargs = {"overrides": [Override("defaults.environment", {"A B": "1"}, "--env")]}
    error = layers.error(**kwargs)
    assert "invalid environment variable name" in str(error)


# -- CCI_* environment variables ------------------------------------------------------------------------


def test_env_var_names_are_derived_from_schema() -> None:
    expected = {
        "CCI_DEFAULTS_IMAGE", "CCI_DEFAULTS_PERSISTENT", "CCI_DEFAULTS_DRIVER", "CCI_TOOL_NAME", "CCI_TOOL_BINARY",
        "CCI_DEFAULTS_INJECT_CREDENTIALS", "CCI_NETWORK_MODE", "CCI_NETWORK_ALLOWED_DOMAINS",
        "CCI_PLUGINS_DISABLED", "CCI_PLUGINS_ENABLED",
    }  # fmt: skip
    assert expected <= set(ENV_VARS)
    assert "CCI_DEFAULTS_ENVIRONMENT" not in ENV_VARS
    assert not any(var.startswith("CCI_INCUS_") for var in ENV_VARS)  # the Incus plugin's section, not the core's
    schema = Schema(load_plugins(entry_points=False).registries.config_sections())
    assert {"CCI_INCUS_CONTAINER_UID", "CCI_INCUS_SOCKET"} <= set(schema.env_vars)
    assert {var: spec.key for var, (spec, _) in schema.env_aliases.items()} == {
        "CCI_DEFAULTS_MOUNT_CLAUDE_CONFIG": "defaults.inject_credentials", "CCI_INCUS_CLAUDE_UID": "incus.container_uid"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("On", True)]
    + [("0", False), ("false", False), ("No", False), ("off", False)],
)
def test_env_bool_parsing(layers: Layers, text: str, expected: bool) -> None:
    config = layers.load(environ={"CCI_DEFAULTS_PERSISTENT": text})
    assert config.defaults.persistent is expected
    assert config.source_of("defaults.persistent") == "env CCI_DEFAULTS_PERSISTENT"


def test_env_int_list_and_optional_parsing(layers: Layers) -> None:
    layers.write(layers.user, '[tool]\nbinary = "claude-x"\n')
    environ = {
        "CCI_INCUS_CLAUDE_UID": " 1001 ",
        "CCI_NETWORK_ALLOWED_DOMAINS": "github.com, api.anthropic.com,,8.8.8.8",
        "CCI_NETWORK_REFRESH_INTERVAL_MINUTES": "0",
        "CCI_TOOL_BINARY": "",
        "CCI_INCUS_SOCKET": "/run/incus.sock",
    }
    config = layers.load(environ=environ)
    assert config.section("incus").container_uid == 1001
    assert config.network.allowed_domains == ["github.com", "api.anthropic.com", "8.8.8.8"]
    assert config.network.refresh_interval_minutes == 0
    assert config.tool.binary is None
    assert config.section("incus").socket == "/run/incus.sock"


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("CCI_DEFAULTS_PERSISTENT", "maybe", 'expected a boolean (1/0, true/false, yes/no, on/off), got "maybe"'),
        ("CCI_INCUS_CLAUDE_UID", "abc", 'expected an integer, got "abc"'),
        ("CCI_INCUS_CLAUDE_UID", "-5", "must be 0 or more, got -5"),
        ("CCI_NETWORK_MODE", "", "must not be empty"),
    ],
)
def test_env_bad_values(layers: Layers, var: str, value: str, message: str) -> None:
    error = layers.error(environ={var: value})
    assert error.source == f"env {var}"
    assert message in str(error)


def test_unknown_env_var_warns_with_suggestion(layers: Layers) -> None:
    layers.load(environ={"CCI_DEFAULT_IMAGE": "x", "HOME": "/h", "PATH": "/bin"})
    assert len(layers.warnings) == 1
    assert "CCI_DEFAULT_IMAGE" in layers.warnings[0]
    assert "did you mean 'CCI_DEFAULTS_IMAGE'?" in layers.warnings[0]


def test_reserved_env_vars_not_warned(layers: Layers) -> None:
    layers.write(layers.user, '[profiles.p]\nimage = "p"\n')
    environ = {"CCI_DEBUG": "1", "CCI_TRACE_HOOKS": "1", "CCI_TEST_INCUS": "1", "CCI_TEST_X_Y": "z", "CCI_PROFILE": "p"}
    config = layers.load(environ=environ)
    assert layers.warnings == []
    assert config.defaults.image == "p"


# -- TOML syntax and types ------------------------------------------------------------------------------


def test_malformed_toml_has_path_and_line(layers: Layers) -> None:
    layers.write(layers.project, '[defaults]\nimage = "x"\npersistent = yes\n')
    error = layers.error()
    assert str(error).startswith(f"{layers.project}:3: invalid TOML: ")
    assert error.source == f"{layers.project}:3"


WRONG_TYPES = [
    ('[defaults]\npersistent = "yes"\n', 2, "defaults.persistent", 'expected a boolean (true or false), got string "yes"'),
    ("[incus]\n\nclaude_uid = true\n", 3, "incus.claude_uid", "expected an integer, got boolean true"),
    ("[incus]\nclaude_uid = \"1000\"\n", 2, "incus.claude_uid", 'expected an integer, got string "1000"'),
    ("[defaults]\nimage = 3\n", 2, "defaults.image", "expected a string, got integer 3"),
    ('[network]\nallowed_domains = "a"\n', 2, "network.allowed_domains", 'expected a list of strings, got string "a"'),
    ("[network]\nallowed_domains = [\"a\", 1]\n", 2, "network.allowed_domains", "got integer 1 at index 1"),
    ("[defaults]\nenvironment = { A = 1 }\n", 2, "defaults.environment", "expected a table of strings, got integer 1"),
    ("[defaults]\nenvironment = \"A=1\"\n", 2, "defaults.environment", "expected a table of strings, got string"),
    ("[network]\nrefresh_interval_minutes = 1.5\n", 2, "network.refresh_interval_minutes", "got float 1.5"),
    ("[profiles.rust]\nimage = \"r\"\npersistent = \"yes\"\n", 3, "profiles.rust.persistent", "expected a boolean"),
    ("defaults = 1\n", 1, "defaults", "expected a table, got integer 1"),
    ("[plugins]\nfoo = 1\n", 2, "plugins.foo", "expected a table of plugin settings, got integer 1"),
    ("[plugins]\ndisabled = \"foo\"\n", 2, "plugins.disabled", 'expected a list of strings, got string "foo"'),
]


@pytest.mark.parametrize(("text", "line", "key", "message"), WRONG_TYPES)
def test_wrong_type_names_file_line_and_key(layers: Layers, text: str, line: int, key: str, message: str) -> None:
    layers.write(layers.project, text)
    error = layers.error()
    assert error.source == f"{layers.project}:{line}"
    assert error.key == key
    assert message in error.message
    assert str(error).startswith(f"{layers.project}:{line}: {key}: ")


def test_claude_uid_negative_rejected(layers: Layers) -> None:
    layers.write(layers.user, "[incus]\nclaude_uid = -1\n")
    error = layers.error()
    assert error.key == "incus.claude_uid"
    assert "must be 0 or more, got -1" in str(error)


def test_network_mode_is_not_a_fixed_list(layers: Layers) -> None:
    layers.write(layers.user, '[network]\nmode = "my-plugin-mode"\n')
    assert layers.load().network.mode == "my-plugin-mode"
    layers.write(layers.user, '[network]\nmode = " "\n')
    assert layers.error().key == "network.mode"


# -- unknown keys ---------------------------------------------------------------------------------------


def test_unknown_key_warns_with_suggestion(layers: Layers) -> None:
    layers.write(layers.user, '[defaults]\nimage = "x"\nimagee = "y"\n')
    config = layers.load()
    assert config.defaults.image == "x"
    assert layers.warnings == [
        "~/.config/cci/config.toml:3: unknown key 'defaults.imagee' is ignored (did you mean 'defaults.image'?)"
    ]


def test_unknown_section_and_profile_key_warn(layers: Layers) -> None:
    layers.write(layers.project, '[defautls]\nimage = "x"\n\n[profiles.rust]\nimge = "r"\n')
    layers.load()
    assert layers.warnings == [
        f"{layers.project}:5: unknown key 'profiles.rust.imge' is ignored (did you mean 'profiles.rust.image'?)",
        f"{layers.project}:1: unknown section 'defautls' is ignored: it is not cci's and belongs to no enabled plugin "
        "(did you mean 'defaults'?)",
    ]


def test_unknown_key_without_close_match_has_no_suggestion(layers: Layers) -> None:
    layers.write(layers.user, "[incus]\nzzz = 1\n")
    layers.load()
    assert layers.warnings == ["~/.config/cci/config.toml:2: unknown key 'incus.zzz' is ignored"]


def test_sessions_dir_deprecation_warning(layers: Layers) -> None:
    layers.write(layers.user, '[paths]\nsessions_dir = "~/.cci/sessions"\n')
    layers.load()
    assert layers.warnings == []  # the default value is harmless
    layers.write(layers.user, '[paths]\nsessions_dir = "/data/sessions"\n')
    config = layers.load()
    assert config.paths.sessions_dir == "/data/sessions"
    assert len(layers.warnings) == 1
    assert layers.warnings[0].startswith("~/.config/cci/config.toml:2: paths.sessions_dir is deprecated and not used")
    assert "~/.cci/sessions-<tool>/" in layers.warnings[0]


# -- plugins --------------------------------------------------------------------------------------------


def test_plugins_disabled_enabled_last_mention_wins(layers: Layers) -> None:
    layers.write(layers.system, '[plugins]\ndisabled = ["a", "b", "c"]\n')
    layers.write(layers.user, '[plugins]\nenabled = ["a", "b"]\n')
    layers.write(layers.project, '[plugins]\ndisabled = ["b", "d"]\n')
    config = layers.load()
    assert config.plugins.disabled == frozenset({"b", "c", "d"})
    config = layers.load(environ={"CCI_PLUGINS_ENABLED": "d", "CCI_PLUGINS_DISABLED": "e"})
    assert config.plugins.disabled == frozenset({"b", "c", "e"})
    enable = [Override("plugins.enabled", "b,e", "--enable")]
    config = layers.load(environ={"CCI_PLUGINS_DISABLED": "e"}, overrides=enable)
    assert config.plugins.disabled == frozenset({"c", "d"})
    assert config.source_of("plugins.disabled") == "--enable"


def test_plugin_settings_merge_per_key(layers: Layers) -> None:
    layers.write(layers.system, '[plugins.allowlist]\nttl = 10\nmode = "strict"\n')
    layers.write(layers.user, "[plugins.allowlist]\nttl = 20\n\n[plugins.other]\nflag = true\n")
    overrides = [Override("plugins.other.level", 3, "--set")]
    config = layers.load(overrides=overrides)
    assert dict(config.plugin_settings("allowlist")) == {"ttl": 20, "mode": "strict"}
    assert dict(config.plugin_settings("other")) == {"flag": True, "level": 3}
    assert dict(config.plugin_settings("missing")) == {}
    assert config.source_of("plugins.allowlist.ttl") == "~/.config/cci/config.toml:2"
    assert config.source_of("plugins.allowlist.mode") == f"{layers.system}:3"
    assert config.source_of("plugins.other.level") == "--set"


# -- command-line overrides -----------------------------------------------------------------------------


def test_overrides_parse_strings_and_check_values(layers: Layers) -> None:
    config = layers.load(
        overrides=[
            Override("defaults.persistent", "yes", "--persistent"),
            Override("incus.claude_uid", 1234, "--uid"),
            Override("network.allowed_domains", ["x.org"], "--allow"),
        ]
    )
    assert config.defaults.persistent is True
    assert config.section("incus").container_uid == 1234
    assert config.network.allowed_domains == ["x.org"]
    assert config.source_of("incus.claude_uid") == "--uid"
    error = layers.error(overrides=[Override("defaults.persistent", 2, "--persistent")])
    assert error.source == "--persistent"
    assert "expected a boolean" in str(error)


def test_unknown_override_key_is_an_error(layers: Layers) -> None:
    error = layers.error(overrides=[Override("defaults.imag", "x", "--image")])
    assert error.source == "--image"
    assert "did you mean 'defaults.image'?" in str(error)


# -- rendering ------------------------------------------------------------------------------------------


def _rendered_config(layers: Layers) -> Config:
    layers.write(layers.user, '[defaults]\nimage = "u"\n[profiles.rust]\nenvironment = { RUST_BACKTRACE = "1" }\n')
    layers.write(layers.project, '[plugins]\ndisabled = ["x"]\n[plugins.net]\nttl = 5\n')
    return layers.load(profile="rust", environ={"CCI_DEFAULTS_PERSISTENT": "1"})


def test_render_toml(layers: Layers) -> None:
    text = render_toml(_rendered_config(layers))
    assert "# active profile: rust" in text
    assert "#   ~/.config/cci/config.toml" in text
    assert f"#   {layers.project}" in text
    assert 'image = "u"  # ~/.config/cci/config.toml:2' in text
    assert "persistent = true  # env CCI_DEFAULTS_PERSISTENT" in text
    assert 'RUST_BACKTRACE = "1"  # profile rust (~/.config/cci/config.toml:4)' in text
    assert "# binary is not set  # default" in text
    assert f'disabled = ["x"]  # {layers.project}:2' in text
    assert f"ttl = 5  # {layers.project}:4" in text
    headers = [line for line in text.splitlines() if line.startswith("[")]
    assert headers == ["[defaults]", "[defaults.environment]", "[tool]", "[paths]", "[network]", "[security]", "[secrets]",
                       "[limits]", "[ports]", "[pool]", "[readiness]", "[sync]",
                       "[incus]  # plugin incus", "[plugins]", "[plugins.net]"]  # fmt: skip
    assert "container_uid = 1000  # default" in text


def test_render_toml_is_valid_toml(layers: Layers) -> None:
    toml = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    data = toml.loads(render_toml(_rendered_config(layers)))
    assert data["defaults"]["image"] == "u"
    assert data["defaults"]["environment"] == {"RUST_BACKTRACE": "1"}
    assert data["plugins"]["net"] == {"ttl": 5}


def test_to_json(layers: Layers) -> None:
    data = to_json(_rendered_config(layers))
    json.dumps(data)  # serialisable
    assert data["files"] == [str(layers.user), str(layers.project)]
    assert data["profile"] == "rust"
    assert data["values"]["defaults.image"] == {"value": "u", "source": "~/.config/cci/config.toml:2"}
    assert data["values"]["incus.container_uid"] == {"value": 1000, "source": "default"}
    assert data["sections"] == {"incus": {"plugin": "incus"}}
    assert data["values"]["defaults.environment"]["value"] == {"RUST_BACKTRACE": "1"}
    assert data["values"]["tool.binary"] == {"value": None, "source": "default"}
    assert list(data["values"])[0] == "defaults.image"
    assert data["plugins"] == {"disabled": ["x"], "settings": {"net": {"ttl": 5}}}


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_a_config_file_that_is_not_one_is_refused_without_reading_it(kind: str, tmp_path: Path) -> None:
    import os

    path = tmp_path / ".cci.toml"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would wait forever
    elif kind == "device":
        path.symlink_to("/dev/zero")  # reading it would never end
    else:
        path.write_text("# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="cannot read config file: (not a regular file|larger than 1024 KiB)"):
        load_config(tmp_path, environ={})


# -- sections plugins declare -----------------------------------------------------------------------------


class OfficeSettings(NamedTuple):
    """A third-party plugin's section (this module postpones annotations, as a plugin's may)."""

    proxy: Annotated[str, Setting("The office proxy's address.", check=non_empty)] = "203.0.113.8"
    port: Annotated[int, Setting("Its port.", check=non_negative)] = 3128


class OfficePlugin:
    @hookimpl
    def cci_register(self, register: Any) -> None:
        register.add_settings("office", OfficeSettings)


def office(layers: Layers, *, disabled: tuple[str, ...] = (), **kwargs: Any) -> Config:
    """Load with the built-in plugins and the office plugin (unless disabled)."""
    plugins = load_plugins(disabled, entry_points=False, extra=[("office", OfficePlugin())])
    return layers.load(plugins=plugins, **kwargs)


def test_a_plugin_section_is_merged_checked_and_shown_like_the_cores(layers: Layers) -> None:
    layers.write(layers.user, '[office]\nproxy = "198.51.100.1"\n')
    config = office(layers, environ={"CCI_OFFICE_PORT": "8080"})
    assert config.section("office") == OfficeSettings(proxy="198.51.100.1", port=8080)
    assert config.source_of("office.proxy") == "~/.config/cci/config.toml:2"
    assert config.source_of("office.port") == "env CCI_OFFICE_PORT"
    text = render_toml(config)
    assert "[office]  # plugin office" in text and 'proxy = "198.51.100.1"  # ~/.config/cci/config.toml:2' in text
    assert to_json(config)["values"]["office.port"] == {"value": 8080, "source": "env CCI_OFFICE_PORT"}
    assert layers.warnings == []


class InjectSettings(NamedTuple):
    """A section whose key's variable is a core key's: [defaults_inject] credentials -> CCI_DEFAULTS_INJECT_CREDENTIALS."""

    credentials: Annotated[bool, Setting("Clashes with defaults.inject_credentials.")] = False


def test_a_plugin_key_whose_variable_is_another_keys_is_refused(layers: Layers) -> None:
    class Clashing:
        @hookimpl
        def cci_register(self, register: Any) -> None:
            register.add_settings("defaults_inject", InjectSettings)

    plugins = load_plugins(entry_points=False, extra=[("clash", Clashing())])
    with pytest.raises(PluginError) as caught:
        layers.load(plugins=plugins, environ={"CCI_DEFAULTS_INJECT_CREDENTIALS": "0"})
    assert str(caught.value).startswith("config keys defaults.inject_credentials (plugin 'core') and "
                                        "defaults_inject.credentials (plugin 'clash') would both be set by "
                                        "CCI_DEFAULTS_INJECT_CREDENTIALS")


def test_a_bad_value_in_a_plugin_section_is_one_error_with_file_and_line(layers: Layers) -> None:
    layers.write(layers.project, '[office]\nproxy = "p"\nport = "many"\n')
    with pytest.raises(ConfigError) as caught:
        office(layers)
    assert str(caught.value) == f'{layers.project}:3: office.port: expected an integer, got string "many"'
    layers.write(layers.project, '[office]\nport = -1\n')
    with pytest.raises(ConfigError, match=r"\.cci\.toml:2: office\.port: must be 0 or more, got -1"):
        office(layers)


def test_a_bad_value_in_incus_is_one_error_with_file_and_line(layers: Layers) -> None:
    layers.write(layers.project, '[incus]\nproject = "p"\nnetwork_subnets = "10.0.0.0/28"\n')
    error = layers.error()
    assert str(error) == f"{layers.project}:3: incus.network_subnets: must be a /24 or larger range, got /28"


def test_an_unknown_key_in_a_plugin_section_warns_with_a_suggestion(layers: Layers) -> None:
    layers.write(layers.user, '[office]\nproxi = "x"\n')
    assert office(layers).section("office") == OfficeSettings()
    assert layers.warnings == [
        "~/.config/cci/config.toml:2: unknown key 'office.proxi' is ignored (did you mean 'office.proxy'?)"]


def test_the_section_of_a_disabled_plugin_is_ignored_with_one_warning(layers: Layers) -> None:
    layers.write(layers.system, '[office]\nproxy = "a"\n')
    layers.write(layers.user, '[plugins]\ndisabled = ["office"]\n\n[office]\nport = "not even checked"\n')
    config = office(layers, disabled=("office",))
    assert layers.warnings == [
        f"{layers.system}:1: unknown section 'office' is ignored: it is not cci's and belongs to no enabled plugin "
        "(plugin 'office' is disabled)"]
    with pytest.raises(NotAvailableError, match=r"config section \[office\] is not declared by any enabled plugin"):
        config.section("office")
    assert "office.proxy" not in to_json(config)["values"]


def test_a_variable_of_a_disabled_plugins_section_says_the_plugin_is_disabled(layers: Layers) -> None:
    layers.write(layers.user, '[plugins]\ndisabled = ["office"]\n')
    office(layers, disabled=("office",), environ={"CCI_OFFICE_PORT": "8080"})
    assert layers.warnings == [
        "environment variable CCI_OFFICE_PORT is not a cci setting and is ignored (plugin 'office' is disabled)"]


def test_a_section_of_a_plugin_not_installed_is_ignored_with_a_warning(layers: Layers) -> None:
    layers.write(layers.user, '[incsu]\nproject = "x"\n')
    config = layers.load()
    assert config.section("incus").project == "default"
    assert layers.warnings == ["~/.config/cci/config.toml:1: unknown section 'incsu' is ignored: it is not cci's and "
                               "belongs to no enabled plugin (did you mean 'incus'?)"]


def test_the_plugin_switches_are_read_before_any_plugin_loads(layers: Layers) -> None:
    from cci_core.config import read_layers

    layers.write(layers.system, '[plugins]\ndisabled = ["office", "codex"]\n[office]\nport = "bad"\n')
    layers.write(layers.project, '[plugins]\nenabled = ["office"]\n')
    read = read_layers(layers.workspace, environ={"CCI_PLUGINS_DISABLED": "setup"}, system_file=layers.system,
                       user_file=layers.user, overrides=[Override("plugins.enabled", ["codex"], "--flag")])
    assert read.disabled_plugins() == {"setup"}
    assert read.disabled_plugins(workspace=False) == {"office", "setup"}  # an untrusted .cci.toml has no say


# -- a key's two names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "canonical", "alias", "value", "read"), [
    ("defaults", "inject_credentials", "mount_claude_config", "false", lambda c: c.defaults.inject_credentials),
    ("incus", "container_uid", "claude_uid", "1001", lambda c: c.section("incus").container_uid),
])
def test_the_specs_names_are_still_accepted_everywhere(layers: Layers, section: str, canonical: str, alias: str,
                                                       value: str, read: Any) -> None:
    expected = json.loads(value)
    layers.write(layers.user, f"[{section}]\n{alias} = {value}\n")
    config = layers.load()
    assert (read(config), config.source_of(f"{section}.{canonical}")) == (expected, "~/.config/cci/config.toml:2")
    assert f"{canonical} = {value}  # ~/.config/cci/config.toml:2" in render_toml(config)
    variable = f"CCI_{section}_{alias}".upper()
    config = layers.load(environ={variable: value})
    assert (read(config), config.source_of(f"{section}.{alias}")) == (expected, f"env {variable}")
    config = layers.load(overrides=[Override(f"{section}.{alias}", value, "--flag")])
    assert read(config) == expected
    assert layers.warnings == []


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("CCI_INCUS_CLAUDE_UID", "abc", 'env CCI_INCUS_CLAUDE_UID: incus.claude_uid: expected an integer, got "abc"'),
    ("CCI_DEFAULTS_MOUNT_CLAUDE_CONFIG", "maybe", "env CCI_DEFAULTS_MOUNT_CLAUDE_CONFIG: defaults.mount_claude_config: "
     'expected a boolean (1/0, true/false, yes/no, on/off), got "maybe"'),
])
def test_a_bad_value_under_a_keys_old_variable_names_the_key_as_spelled(layers: Layers, variable: str, value: str,
                                                                        expected: str) -> None:
    """The error is the one the release before the tool-neutral names gave: the name the user wrote, not another."""
    assert str(layers.error(environ={variable: value})) == expected


def test_plugins_written_before_the_tool_neutral_names_read_the_settings_by_the_specs_names(layers: Layers) -> None:
    """A plugin of the release before reads ``config.defaults.mount_claude_config`` (as the built-in tool-state
    plugin did) and a profile's; the Incus plugin's section answers ``claude_uid``: the same values."""
    layers.write(layers.user, "[defaults]\ninject_credentials = false\n[incus]\ncontainer_uid = 1001\n"
                              "[profiles.p]\ninject_credentials = true\n")
    config = layers.load()
    assert config.defaults.mount_claude_config is False
    assert config.profiles["p"].mount_claude_config is True
    assert config.section("incus").claude_uid == 1001
    assert "mount_claude_config" not in config.defaults._fields  # read-only, not a second key


def test_the_profile_key_takes_its_old_name_too(layers: Layers) -> None:
    layers.write(layers.user, "[profiles.p]\nmount_claude_config = false\n")
    config = layers.load(profile="p")
    assert config.defaults.inject_credentials is False and config.profiles["p"].inject_credentials is False
    assert config.source_of("defaults.inject_credentials") == "profile p (~/.config/cci/config.toml:2)"


def test_both_names_with_different_values_in_one_layer_is_an_error(layers: Layers) -> None:
    layers.write(layers.user, "[incus]\ncontainer_uid = 1001\nclaude_uid = 1002\n")
    error = layers.error()
    assert str(error) == ("~/.config/cci/config.toml:3: incus.claude_uid: incus.container_uid and incus.claude_uid "
                          "name the same setting and are given different values (keep only incus.container_uid)")
    layers.write(layers.user, "[profiles.p]\ninject_credentials = true\nmount_claude_config = false\n")
    assert "name the same setting" in str(layers.error(profile="p"))
    layers.write(layers.user, "")
    error = layers.error(environ={"CCI_DEFAULTS_INJECT_CREDENTIALS": "1", "CCI_DEFAULTS_MOUNT_CLAUDE_CONFIG": "0"})
    assert str(error) == ("env CCI_DEFAULTS_MOUNT_CLAUDE_CONFIG: CCI_DEFAULTS_INJECT_CREDENTIALS and "
                          "CCI_DEFAULTS_MOUNT_CLAUDE_CONFIG name the same setting and are given different values "
                          "(keep only CCI_DEFAULTS_INJECT_CREDENTIALS)")  # the variables named once, as set


def test_both_names_with_one_value_or_in_two_layers_are_fine(layers: Layers) -> None:
    layers.write(layers.user, "[incus]\ncontainer_uid = 1001\nclaude_uid = 1001\n")
    layers.write(layers.project, "[incus]\nclaude_uid = 1003\n")
    config = layers.load()
    assert config.section("incus").container_uid == 1003
    assert config.source_of("incus.container_uid") == f"{layers.project}:2"


def test_a_config_survives_pickling_with_its_checks(tmp_path: Path) -> None:
    """The detached processes that end a session or fill the warm pool get the config pickled: every part of it,
    the checks of its settings included, must pickle (a closure would not)."""
    import io
    import pickle

    from cci_core.cli.detached_process import dump

    config = load_config(tmp_path, environ={"CCI_POOL_SIZE": "2", "CCI_READINESS_TIMEOUT": "7"})
    stream = io.BytesIO()
    dump(config, stream)
    again = pickle.loads(stream.getvalue())
    assert (again.pool.size, again.readiness.timeout, again.workspace) == (2, 7, config.workspace)
