"""A workspace's .cci.toml acts only as the user trusted it: code in a container can write it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cci_core.cli.main import cli
from cci_core.config import load_config
from cci_core.config.trust import TrustStore, require_trusted
from cci_core.errors import ConfigError


def run(workspace: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--workspace", str(workspace), *args])


def test_an_untrusted_workspace_config_stops_every_command_that_acts(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text('[network]\nmode = "open"\n')  # as an agent inside could write it
    refused = run(tmp_path, "plugins", "list")
    assert refused.exit_code == 2
    assert refused.output == (f"cci: {tmp_path}/.cci.toml is not trusted: a workspace config can loosen the "
                              "sandbox, and code in a container can write it (read it, then run 'cci config trust' "
                              "in the workspace)\n")
    assert run(tmp_path, "run", "--", "true").exit_code == 2
    shown = run(tmp_path, "config", "show")  # looking is always allowed
    assert shown.exit_code == 0 and 'mode = "open"' in shown.output
    assert run(tmp_path, "config", "path").output.splitlines()[-1].endswith("(not trusted)")
    helped = run(tmp_path, "--help")
    assert helped.exit_code == 0 and "plugin commands are not listed" in helped.output


def test_trust_covers_exactly_the_content_trusted(tmp_path: Path, isolated_env: Path) -> None:
    config = tmp_path / ".cci.toml"
    config.write_text('[network]\nmode = "open"\n')
    trusted = run(tmp_path, "config", "trust")
    assert trusted.exit_code == 0 and "trusted" in trusted.output
    assert trusted.output.splitlines()[-2:] == ["  [network]", '  mode = "open"']  # exactly what is trusted
    assert run(tmp_path, "plugins", "list").exit_code == 0
    assert run(tmp_path, "config", "path").output.splitlines()[-1].endswith("(trusted)")
    store = isolated_env / ".cci" / "trusted-configs.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600

    config.write_text('[network]\nmode = "open"\n# one more line\n')
    changed = run(tmp_path, "plugins", "list")
    assert changed.exit_code == 2 and "changed since you trusted it" in changed.output

    run(tmp_path, "config", "trust")
    assert run(tmp_path, "config", "trust", "--revoke").output.endswith("no longer trusted\n")
    assert run(tmp_path, "plugins", "list").exit_code == 2


def test_a_config_that_sets_nothing_needs_no_trust(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text("# settings come later\n")
    assert run(tmp_path, "plugins", "list").exit_code == 0
    assert run(tmp_path, "config", "trust").output.endswith("sets nothing: there is nothing to trust\n")


def test_a_malformed_config_is_never_trusted(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text("[network\n")
    refused = run(tmp_path, "config", "trust")
    assert refused.exit_code == 2 and "invalid TOML" in refused.output
    assert TrustStore().load() == {}


def test_trust_is_per_file(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for workspace in (one, two):
        workspace.mkdir()
        (workspace / ".cci.toml").write_text('[defaults]\npersistent = true\n')
    run(one, "config", "trust")
    require_trusted(load_config(one, environ={}))
    with pytest.raises(ConfigError, match="is not trusted"):  # the same content elsewhere is another file
        require_trusted(load_config(two, environ={}))


def test_a_file_changed_while_being_trusted_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core.config import sources

    (tmp_path / ".cci.toml").write_text('[network]\nmode = "allowlist"\nallowed_domains = ["example.org"]\n')
    real = sources.read_config_file

    def swapped(path: Path):  # type: ignore[no-untyped-def]
        path.write_text('[network]\nmode = "open"\n')  # the container rewrites it between the load and the trust
        return real(path)

    monkeypatch.setattr(sources, "read_config_file", swapped)
    refused = run(tmp_path, "config", "trust")
    assert refused.exit_code == 2 and "changed while it was being trusted" in refused.output
    monkeypatch.undo()
    assert run(tmp_path, "config", "path").output.splitlines()[-1].endswith("(not trusted)")


def test_an_untrusted_workspace_config_has_no_say_in_which_plugins_load(
        tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core import plugin_manager

    loaded: list[frozenset[str]] = []
    real = plugin_manager.load_plugins

    def recording(disabled: frozenset[str] = frozenset(), **kwargs: object) -> plugin_manager.Plugins:
        loaded.append(frozenset(disabled))
        return real(disabled, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(plugin_manager, "load_plugins", recording)
    user_file = isolated_env / ".config" / "cci" / "config.toml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text('[plugins]\ndisabled = ["codex"]\n')
    (tmp_path / ".cci.toml").write_text('[plugins]\nenabled = ["codex"]\n')  # as an agent inside could write it
    shown = run(tmp_path, "config", "show")  # looking loads the plugins (their sections), but not this one
    assert shown.exit_code == 0 and loaded == [{"codex"}]
    assert run(tmp_path, "plugins", "list").exit_code == 2
    assert run(tmp_path, "config", "trust").exit_code == 0
    loaded.clear()
    listed = run(tmp_path, "plugins", "list")
    assert listed.exit_code == 0 and loaded == [frozenset()]
    assert [line.split()[-1] for line in listed.output.splitlines() if line.startswith("codex ")] == ["yes"]
