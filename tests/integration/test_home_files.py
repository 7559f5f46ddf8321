"""What cci writes into the container user's home on a real Incus (the stand-in tool's credential and settings):
links, and files, the agent planted at their places in a persistent session are never followed at the next start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cci_core.naming import container_name
from cci_builtin_plugins.incus.driver import IncusDriver
from tests.integration.terminal import Terminal
from tests.integration.test_sandbox_brief import end_inside, inside, shell
from tests.stand_in import stand_in_workspace

pytestmark = pytest.mark.incus

HOME = "/home/code/.stand-in"
CREDENTIAL = '{"token": "stand-in-credential-home-files"}'
#: a JSON file of the workspace that a planted link at the settings' place names: neither read nor written
PLANTED = '{"planted": "read through a link"}\n'


def assert_users_private_file(driver: IncusDriver, name: str, path: str) -> str:
    """``path`` is a regular file of the container user's, 0600; its text."""
    assert inside(driver, name, f"stat -c '%F %a %u:%g' {path}") == "regular file 600 1000:1000\n"
    return inside(driver, name, f"cat {path}")


def test_links_and_files_planted_at_the_credentials_and_settings_places_are_replaced_never_followed(
    tmp_path: Path, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str], isolated_env: Path
) -> None:
    (isolated_env / ".stand-in").mkdir()
    (isolated_env / ".stand-in" / "credentials.json").write_text(CREDENTIAL)
    workspace = stand_in_workspace(tmp_path / "project")
    (workspace / "planted.json").write_text(PLANTED)
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, cci_environ, "--persistent")
    terminal.wait_for("one", "started ")
    assert assert_users_private_file(driver, name, f"{HOME}/credentials.json") == CREDENTIAL

    # the agent (root inside) puts links where cci writes at the next start
    inside(driver, name, f"ln -sfn /workspace/leak.json {HOME}/credentials.json && "
                         f"ln -sfn /workspace/planted.json {HOME}/settings.json")
    assert "saved; container kept" in end_inside(terminal, "one", driver, name)
    shell(terminal, "two", workspace, cci_environ, "--persistent")
    terminal.wait_for("two", "resumed ")
    assert not (workspace / "leak.json").exists() and not (workspace / "leak.json").is_symlink()
    assert (workspace / "planted.json").read_text() == PLANTED  # neither written through the link...
    assert assert_users_private_file(driver, name, f"{HOME}/credentials.json") == CREDENTIAL
    settings = json.loads(assert_users_private_file(driver, name, f"{HOME}/settings.json"))
    assert settings == {"sandbox": {"trusted": True}}  # ...nor read through it

    # files the agent made, root's and readable by all: made anew, the user's, 0600
    for file in ("credentials.json", "settings.json"):
        inside(driver, name, f"rm -f {HOME}/{file} && echo '{{\"agent\": 1}}' >{HOME}/{file} && "
                             f"chown root:root {HOME}/{file} && chmod 644 {HOME}/{file}")
    assert "saved; container kept" in end_inside(terminal, "two", driver, name)
    shell(terminal, "three", workspace, cci_environ, "--persistent")
    terminal.wait_for("three", "resumed ")
    assert assert_users_private_file(driver, name, f"{HOME}/credentials.json") == CREDENTIAL
    settings = json.loads(assert_users_private_file(driver, name, f"{HOME}/settings.json"))
    assert settings == {"agent": 1, "sandbox": {"trusted": True}}  # a real file's keys are kept
    assert sorted(path.name for path in workspace.iterdir()) == [".cci.toml", ".stand-in", "planted.json"]
    end_inside(terminal, "three", driver, name)
