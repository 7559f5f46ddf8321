"""The sandbox brief (cci_core/sandbox_brief.py, the network policies' cci_sandbox_brief paragraphs): what it says,
where it goes, the user's own text around cci's block, and what the container planted at its place.

Against the real Incus (and the real Claude Code image): tests/integration/test_sandbox_brief.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_core import hookimpl
from cci_core.context import LaunchContext
from cci_core.driver import Container
from cci_core.plugin_manager import load_plugins
from cci_core.sandbox_brief import BEGIN, END, MAX_EXISTING, merged, paragraphs_of, rewrite_brief, write_brief
from cci_core.session import LaunchRequest, SessionManager
from tests.fakes import FakeContainer
from tests.unit.test_network_policies import FakeDriverPlugin, manager

BRIEF = "/home/code/.claude/CLAUDE.md"


def launched(tmp_path: Path, *overrides: tuple[str, object]) -> tuple[SessionManager, FakeContainer, list[str]]:
    warnings: list[str] = []
    sessions = manager(tmp_path, *overrides)
    sessions.warn = warnings.append
    container, _ctx = sessions.launch(LaunchRequest(tmp_path))
    assert isinstance(container, FakeContainer)
    return sessions, container, warnings


def brief_of(container: FakeContainer) -> str:
    return container.files[BRIEF][0].decode()


def test_a_launch_writes_the_brief_where_the_tool_reads_it_the_users_0600(tmp_path: Path) -> None:
    _sessions, container, warnings = launched(tmp_path)
    data, mode, uid, gid = container.files[BRIEF]
    text = data.decode()
    assert (mode, uid, gid) == (0o600, 1000, 1000) and warnings == []
    assert text.startswith(BEGIN + "\n") and text.endswith(END + "\n") and text.count(BEGIN) == 1
    assert "You run in a cci sandbox" in text and "`/workspace`" in text and "sudo" in text
    assert "**Network (`restricted` policy):**" in text and "10.0.0.0/8" in text
    assert "**Limits:** " in text and "10000 processes" in text
    assert "allowed_domains" in text and "cci config trust" in text and "cci port add" in text
    assert not [path for path in container.files if path.startswith("/workspace")]


def test_codex_gets_it_in_its_global_instructions(tmp_path: Path) -> None:
    _sessions, container, warnings = launched(tmp_path, ("tool.name", "codex"))
    assert BEGIN in container.files["/home/code/.codex/AGENTS.md"][0].decode() and warnings == []
    assert BRIEF not in container.files


def test_the_brief_comes_after_the_credentials(tmp_path: Path) -> None:
    _sessions, container, _warnings = launched(tmp_path)
    paths = list(container.files)
    assert paths.index(BRIEF) > paths.index("/home/code/.claude/settings.json")


def test_the_proxy_policys_paragraph_names_what_it_allows_and_denies(tmp_path: Path) -> None:
    _sessions, container, _warnings = launched(
        tmp_path, ("network.mode", "allowlist"), ("network.allowed_domains", ["api.example.org", "*.example.com:8443"]),
        ("network.denied_domains", ["bad.example.com"]))
    text = brief_of(container)
    assert "**Network (`proxy` policy):**" in text
    assert "- allowed_domains: `api.example.org`, `*.example.com:8443`" in text
    assert "- never (denied_domains): `bad.example.com:80,443,8443`" in text  # (every port an allow names)
    assert "403" in text and "HTTPS_PROXY" in text


def test_the_open_policy_says_nothing_is_restricted(tmp_path: Path) -> None:
    _sessions, container, _warnings = launched(tmp_path, ("network.mode", "open"))
    text = brief_of(container)
    assert "**Network (`open` policy):** no restriction" in text and "restricted` policy" not in text


def test_limits_set_are_named(tmp_path: Path) -> None:
    _sessions, container, _warnings = launched(tmp_path, ("limits.memory", "4GiB"), ("limits.cpu", "2"),
                                               ("limits.processes", 0), ("limits.disk", "30GiB"),
                                               ("limits.duration", "8h"))
    assert "**Limits:** CPUs 2; memory 4GiB; root disk 30GiB; the session ends after 8h." in brief_of(container)


def test_a_copied_workspace_is_told_as_a_copy_on_a_server_away_from_the_user(tmp_path: Path) -> None:
    from cci_core.config import load_config
    from cci_core.sandbox_brief import core_paragraphs

    config = load_config(tmp_path, environ={})
    mounted = LaunchContext(config=config, workspace=tmp_path, container_name="cci-x-1", slot=1, session_id="s",
                            persistent=False, image="cci")
    assert "on the user's machine" in core_paragraphs(mounted)[0]
    assert "`/workspace`, shared with the user's machine" in core_paragraphs(mounted)[0]
    mounted.synced = True
    text = core_paragraphs(mounted)[0]
    assert "on a server away from the user's machine" in text and "shared with" not in text
    assert "`/workspace`, a copy of the user's project, copied back to their machine when the session is saved" in text


class Paragraphs:
    """A plugin loaded after the built-ins, contributing one paragraph (and an empty one, dropped)."""

    @hookimpl
    def cci_sandbox_brief(self, ctx: LaunchContext, container: Container) -> list[str]:
        return [f"**Extra:** for {container.name}.", "  "]


def test_the_plugins_paragraphs_follow_the_core_and_the_network_in_the_plugins_order(tmp_path: Path) -> None:
    sessions = manager(tmp_path)
    sessions.plugins = load_plugins(entry_points=False, extra=[("fake", FakeDriverPlugin()), ("extra", Paragraphs())])
    container, _ctx = sessions.launch(LaunchRequest(tmp_path))
    text = container.files[BRIEF][0].decode()
    assert (text.index("You run in a cci sandbox") < text.index("`restricted` policy")
            < text.index(f"**Extra:** for {container.name}.") < text.index("**Need more?**"))
    assert "\n\n\n" not in text


def test_the_users_own_text_is_kept_and_the_block_replaced_not_repeated(tmp_path: Path) -> None:
    sessions, container, _warnings = launched(tmp_path)
    ctx = sessions.context(container.name, container.labels())
    ctx.network_policy = "open"
    own = "# My rules\n\nAlways run the tests.\n"
    container.files[BRIEF] = (brief_of(container).encode() + b"\n" + own.encode(), 0o644, 0, 0)
    assert write_brief(sessions.plugins, ctx, container)
    assert write_brief(sessions.plugins, ctx, container)
    data, mode, uid, _gid = container.files[BRIEF]
    text = data.decode()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.endswith("\n" + own)
    assert "`open` policy" in text and "`restricted` policy" not in text
    assert (mode, uid) == (0o600, 1000)  # the agent's 0644 root file is replaced by the user's 0600 one


@pytest.mark.parametrize("existing, expected", [
    ("", "B\n"),
    ("mine\n", "B\n\nmine\n"),
    (f"{BEGIN}\nold\n{END}\nmine\n", "B\n\nmine\n"),
    (f"mine\n{BEGIN}\nold\n{END}\nmore\n{BEGIN}\nolder\n{END}\n", "B\n\nmine\nmore\n"),
    (f"mine\n{BEGIN}\nkept: no end marker follows\n", "B\n\nmine\nkept: no end marker follows\n"),
    (f"{END}\nmine\n", "B\n\nmine\n"),
])
def test_merged_takes_every_cci_block_out_and_puts_the_new_one_first(existing: str, expected: str) -> None:
    assert merged(existing, "B\n") == expected


def test_each_plugins_answer_gives_its_paragraphs_a_lone_string_one() -> None:
    assert paragraphs_of([None, ["one", " ", "two\n"], "three", []]) == ["one", "two", "three"]


def test_a_link_planted_at_the_brief_is_replaced_never_followed(tmp_path: Path) -> None:
    sessions, container, _warnings = launched(tmp_path)
    ctx = sessions.context(container.name, container.labels())
    for target in ("/etc/passwd", "/workspace/x"):
        container.files.pop(BRIEF)
        container.links[BRIEF] = target
        pulled: list[str] = []
        container.pull_file = lambda path: pulled.append(path) or b""  # type: ignore[method-assign]
        assert write_brief(sessions.plugins, ctx, container)
        assert pulled == [] and BRIEF not in container.links and BEGIN in brief_of(container)
        assert target not in container.files


def test_a_directory_on_the_way_that_is_a_link_stops_the_brief_with_a_warning(tmp_path: Path) -> None:
    sessions, container, _warnings = launched(tmp_path)
    ctx = sessions.context(container.name, container.labels())
    container.files.pop(BRIEF)
    container.directories.pop("/home/code/.claude", None)
    container.links["/home/code/.claude"] = "/workspace"
    warnings: list[str] = []
    assert not write_brief(sessions.plugins, ctx, container, warnings.append)
    assert BRIEF not in container.files and not [path for path in container.files if path.startswith("/workspace")]
    assert warnings == [f"the sandbox brief was not written to {container.name}:{BRIEF}: {container.name}:"
                        "/home/code/.claude is a symlink, not a directory (remove it inside the container)"]


def test_a_file_too_large_is_neither_read_nor_replaced(tmp_path: Path) -> None:
    sessions, container, _warnings = launched(tmp_path)
    ctx = sessions.context(container.name, container.labels())
    huge = b"x" * (MAX_EXISTING + 1)
    container.files[BRIEF] = (huge, 0o600, 1000, 1000)
    container.pull_file = lambda path: pytest.fail(f"{path} was read")  # type: ignore[method-assign]
    warnings: list[str] = []
    assert not write_brief(sessions.plugins, ctx, container, warnings.append)
    assert container.files[BRIEF][0] == huge and len(warnings) == 1 and "over 256 KiB" in warnings[0]


def test_a_session_without_a_tool_or_a_tool_without_a_brief_gets_none(tmp_path: Path) -> None:
    sessions, container, _warnings = launched(tmp_path)
    ctx = sessions.context(container.name, container.labels())
    container.files.pop(BRIEF)
    ctx.tool = None
    assert not write_brief(sessions.plugins, ctx, container) and BRIEF not in container.files


def test_a_rewrite_uses_the_plan_of_the_network_the_container_is_on(tmp_path: Path) -> None:
    sessions, container, _warnings = launched(
        tmp_path, ("network.mode", "proxy"), ("network.allowed_domains", ["api.example.org"]))
    container.files.pop(BRIEF)
    assert rewrite_brief(sessions, container)
    assert "- allowed_domains: `api.example.org`" in brief_of(container)
    container.state = "stopped"
    container.files.pop(BRIEF)
    assert not rewrite_brief(sessions, container) and BRIEF not in container.files
