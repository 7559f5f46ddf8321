"""The sandbox brief on a real Incus: where the tool reads it (the stand-in tool's ``~/.stand-in/BRIEF.md``, Claude
Code's ``~/.claude/CLAUDE.md`` in the real image), what it names, the user's own text kept across restarts of a
persistent session, and links the agent planted at its place never followed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from cci_core.naming import container_name
from cci_core.sandbox_brief import BEGIN, END
from cci_builtin_plugins.incus.driver import IncusDriver
from tests.integration.conftest import CCI, run_cci
from tests.integration.terminal import Terminal
from tests.integration.test_claude_image import ACCOUNT, CREDENTIALS
from tests.integration.test_proxy_policy import PROXY_IMAGE
from tests.stand_in import stand_in_workspace

pytestmark = pytest.mark.incus

BRIEF = "/home/code/.stand-in/BRIEF.md"
OWN_TEXT = "my own rule: run the tests first"


def inside(driver: IncusDriver, name: str, script: str) -> str:
    """What ``sh -c script`` prints as root in container ``name``."""
    result = driver.get(name).exec(["sh", "-c", script])
    assert result.exit_code == 0, (script, result.stdout, result.stderr)
    return result.stdout


def shell(terminal: Terminal, window: str, workspace: Path, env: dict[str, str], *flags: str) -> None:
    terminal.start(window, f"{CCI} --workspace {workspace} shell {' '.join(flags)}", {**env, "TERM": "xterm"})


def end_inside(terminal: Terminal, window: str, driver: IncusDriver, name: str) -> str:
    """Power the session off from inside (as ``sudo poweroff`` would); the screen once its cci has exited."""
    driver.get(name).exec(["sh", "-c", "poweroff"])
    return terminal.wait_for(window, "CCI-EXITED-0", timeout=120)


def assert_brief(driver: IncusDriver, name: str, path: str, *fragments: str) -> str:
    """The brief at ``path`` is a regular file of the container user's, 0600, with one cci block naming each of
    ``fragments``; its text."""
    assert inside(driver, name, f"stat -c '%F %a %u' {path}") == "regular file 600 1000\n"
    text = inside(driver, name, f"cat {path}")
    assert text.startswith(BEGIN + "\n") and text.count(BEGIN) == 1 and text.count(END) == 1, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def assert_not_in_workspace(workspace: Path) -> None:
    for path in workspace.rglob("*"):
        assert not path.is_file() or BEGIN.encode() not in path.read_bytes(), path


def test_a_persistent_session_keeps_the_users_text_and_follows_no_planted_link(
    tmp_path: Path, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str]
) -> None:
    workspace = stand_in_workspace(tmp_path / "project")
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, cci_environ, "--persistent")
    terminal.wait_for("one", "started ")
    assert_brief(driver, name, BRIEF, "You run in a cci sandbox", "**Network (`restricted` policy):**",
                 "10.0.0.0/8", "cci config trust")
    assert_not_in_workspace(workspace)
    inside(driver, name, f"printf '\\n{OWN_TEXT}\\n' >>{BRIEF} && chown root:root {BRIEF} && chmod 644 {BRIEF}")
    assert "saved; container kept" in end_inside(terminal, "one", driver, name)

    shell(terminal, "two", workspace, cci_environ, "--persistent")
    terminal.wait_for("two", "resumed ")
    text = assert_brief(driver, name, BRIEF, "`restricted` policy")  # the agent's root 0644 file: replaced
    assert text.endswith(f"{END}\n\n{OWN_TEXT}\n"), text

    # the agent plants links at the brief's place: each is removed, what it leads to left alone
    passwd = inside(driver, name, "sha256sum /etc/passwd")
    inside(driver, name, f"ln -sfn /etc/passwd {BRIEF}")
    assert "saved; container kept" in end_inside(terminal, "two", driver, name)
    shell(terminal, "three", workspace, cci_environ, "--persistent")
    terminal.wait_for("three", "resumed ")
    text = assert_brief(driver, name, BRIEF, "`restricted` policy")
    assert inside(driver, name, "sha256sum /etc/passwd") == passwd and "root:x:0:0" not in text  # (nor read)

    inside(driver, name, f"ln -sfn /workspace/planted {BRIEF}")
    assert "saved; container kept" in end_inside(terminal, "three", driver, name)
    shell(terminal, "four", workspace, cci_environ, "--persistent")
    terminal.wait_for("four", "resumed ")
    assert_brief(driver, name, BRIEF, "`restricted` policy")
    assert not (workspace / "planted").exists() and not (workspace / "planted").is_symlink()
    assert_not_in_workspace(workspace)

    # a FIFO (opening it would block) is removed unopened; a huge (sparse) file is neither read nor replaced
    inside(driver, name, f"rm -f {BRIEF} && mkfifo -m 600 {BRIEF}")
    assert "saved; container kept" in end_inside(terminal, "four", driver, name)
    shell(terminal, "five", workspace, cci_environ, "--persistent")
    terminal.wait_for("five", "resumed ")
    assert_brief(driver, name, BRIEF, "`restricted` policy")
    inside(driver, name, f"rm -f {BRIEF} && truncate -s 1G {BRIEF}")
    assert "saved; container kept" in end_inside(terminal, "five", driver, name)
    shell(terminal, "six", workspace, cci_environ, "--persistent")
    terminal.wait_for("six", "resumed ")
    assert inside(driver, name, f"stat -c '%F %s' {BRIEF}") == f"regular file {1 << 30}\n"
    run_cci("kill", name, env=cci_environ)
    terminal.wait_for("six", "CCI-EXITED-", timeout=120)


def test_a_proxy_policys_brief_names_its_allowed_hosts_presets_and_denials(
    tmp_path: Path, driver: IncusDriver, terminal: Terminal, cci_environ: dict[str, str]
) -> None:
    allowed = f"brief-{uuid.uuid4().hex[:8]}.ccit.test"  # a plan (and a proxy) of this test alone
    workspace = stand_in_workspace(
        tmp_path / "project", f'[network]\nmode = "proxy"\nallowed_domains = ["{allowed}", "*.{allowed}:8443"]\n'
                              f'presets = ["github"]\ndenied_domains = ["gist.github.com"]\n'
                              f'proxy_image = "{PROXY_IMAGE}"\n')
    name = container_name(workspace, 1)
    try:
        shell(terminal, "one", workspace, cci_environ)
        terminal.wait_for("one", "started ", timeout=180)
        assert_brief(driver, name, BRIEF, "**Network (`proxy` policy):**",
                     f"- allowed_domains: `{allowed}`, `*.{allowed}:8443`",
                     "- preset github: `github.com`, `api.github.com`",
                     "- never (denied_domains): `gist.github.com:80,443,8443`", "403")
        assert_not_in_workspace(workspace)
        end_inside(terminal, "one", driver, name)
    finally:
        network = next((item.name for item in driver.policy_networks()
                        if allowed in item.plan.settings.get("allowed_domains", [])), None)
        if network:
            run_cci("network", "delete", network, env=cci_environ)


def test_claude_code_finds_the_brief_in_its_user_instructions(
    tmp_path: Path, driver: IncusDriver, terminal: Terminal, claude_environ: dict[str, str], isolated_env: Path,
) -> None:
    (isolated_env / ".claude").mkdir()
    (isolated_env / ".claude" / ".credentials.json").write_text(json.dumps(CREDENTIALS))
    (isolated_env / ".claude.json").write_text(json.dumps(ACCOUNT))
    workspace = tmp_path / "project"
    workspace.mkdir()
    name = container_name(workspace, 1)
    shell(terminal, "one", workspace, claude_environ)
    terminal.wait_for("one", "Claude Pro", timeout=120)  # it runs, with the injected login
    assert_brief(driver, name, "/home/code/.claude/CLAUDE.md", "`restricted` policy", "`/workspace`")
    # the real binary's word on where it reads the user's instructions
    terminal.keys("one", "-l", "/memory")
    terminal.wait_for("one", "Edit CLAUDE.md files")
    terminal.keys("one", "Enter")
    assert "Saved in ~/.claude/CLAUDE.md" in terminal.wait_for("one", "User instructions")
    assert_not_in_workspace(workspace)
    result = run_cci("kill", name, env=claude_environ)
    assert result.returncode == 0, result.stderr
    terminal.wait_for("one", "CCI-EXITED-", timeout=120)
