"""The example third-party plugin in examples/, installed with pip and used through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cci_core.config import load_config
from cci_core.context import LaunchContext
from cci_core.plugin_manager import load_plugins
from tests.workspace_config import write_trusted

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cci-hello-plugin"
CCI = Path(sys.executable).with_name("cci")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed into its own directory (put on PYTHONPATH to use it)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(EXAMPLE)],
        check=True,
    )
    return target


def cci(site: Path, workspace: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), **(env or {})}
    return subprocess.run([str(CCI), "--workspace", str(workspace), *args], env=env, capture_output=True,
                          text=True, check=False)


def test_installed_plugin_is_listed_and_its_command_works(site: Path, tmp_path: Path) -> None:
    listing = cci(site, tmp_path, "plugins", "list", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    hello = next(row for row in json.loads(listing.stdout) if row["name"] == "hello")
    assert hello["distribution"] == "cci-hello-plugin" and hello["version"] == "1.0.0"
    assert hello["enabled"] is True and hello["builtin"] is False
    assert hello["provides"] == ["tool:hello", "command:hello", "settings:hello"]
    assert hello["hooks"] == ["cci_environment", "cci_register"]
    greeting = cci(site, tmp_path, "hello", "--name", "tester")
    assert (greeting.returncode, greeting.stdout) == (0, "hello, tester!\n")


def test_installed_plugin_can_be_disabled_in_the_workspace_config(site: Path, tmp_path: Path) -> None:
    write_trusted(tmp_path, '[plugins]\ndisabled = ["hello"]\n')
    listing = cci(site, tmp_path, "plugins", "list")
    row = next(line.split() for line in listing.stdout.splitlines() if line.startswith("hello "))
    assert row == ["hello", "-", "cci-hello-plugin", "1.0.0", "no"]
    refused = cci(site, tmp_path, "hello")
    assert refused.returncode == 2 and "No such command 'hello'" in refused.stderr


def test_installed_plugin_reads_its_own_settings(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / ".cci.toml").write_text('[hello]\ngreeting = "bonjour"\n')
    plugins = load_plugins()
    config = load_config(tmp_path, environ={}, plugins=plugins)
    ctx = LaunchContext(config=config, workspace=tmp_path, container_name="c", slot=1, session_id="s",
                        persistent=False, image="cci")
    assert {"HELLO_GREETING": "bonjour"} in plugins.hook.cci_environment(ctx=ctx)
    tool = plugins.registries.tools.get("hello")()
    assert tool.command("s1", resume=True)[:2] == ["bash", "-c"]


def test_installed_plugins_section_is_checked_listed_and_set_from_the_environment(site: Path, tmp_path: Path) -> None:
    write_trusted(tmp_path, '[hello]\ngreeting = "salut"\n')
    said = cci(site, tmp_path, "hello", "--name", "you")
    assert (said.returncode, said.stdout) == (0, "salut, you!\n"), said.stderr
    shown = cci(site, tmp_path, "config", "show", env={"CCI_HELLO_GREETING": "hej"})
    assert shown.returncode == 0, shown.stderr
    assert "[hello]  # plugin hello" in shown.stdout and 'greeting = "hej"  # env CCI_HELLO_GREETING' in shown.stdout
    write_trusted(tmp_path, '[hello]\ngreeting = "  "\n')
    refused = cci(site, tmp_path, "hello")
    assert (refused.returncode, refused.stderr) == (2, f"cci: {tmp_path}/.cci.toml:2: hello.greeting: must not be "
                                                       "empty\n")


def test_a_disabled_plugins_section_is_ignored_with_one_warning(site: Path, tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text('[hello]\ngreeting = "salut"\n')
    shown = cci(site, tmp_path, "config", "show", env={"CCI_PLUGINS_DISABLED": "hello"})
    assert shown.returncode == 0 and "[hello]" not in shown.stdout
    assert shown.stderr.count("warning") == 1
    assert (f"{tmp_path}/.cci.toml:1: unknown section 'hello' is ignored: it is not cci's and belongs to no enabled "
            "plugin (plugin 'hello' is disabled)") in shown.stderr
