#!/usr/bin/env python3
"""``cci shell`` until Claude Code's screen appears, against the same by hand with the incus CLI, in the same run.

    python benchmarks/claude_start.py [--runs N] [--project P] [--image I]

Each start runs in a pane of a host tmux server of its own; the clock stops when
the pane shows Claude Code's banner (``Claude Code v...``; capture-pane polled
every 50 ms). By hand: ``incus init`` with cci's config, the workspace disk, the
NIC on the default policy's network (as benchmarks/lifecycle.py), ``incus start``,
Claude's onboarding and trust settings pushed (cci writes them too; without them
Claude shows its first-run screens), then ``incus exec -t ... -- su - code -c
'cd /workspace && claude ...'``. Target: within 1.15x. A second floor also waits for
systemd to finish booting first (its socket, then ``systemctl is-system-running --wait``), as cci does. The two alternate, so both
see the same machine; the containers are deleted after each start, untimed.

Needs the Incus test environment with the real default image (scripts/incus-test-env
builds cci-test-claude) and runs in its project (default cci-test). Prints medians
and the ratio; nothing is asserted.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from lifecycle import (  # noqa: E402  (benchmarks/ is no package)
    incus_options,
    median_p90,
    report,
    seconds_to_screen,
    session_environment,
    sh,
)

BANNER = "Claude Code v"
#: inside: wait for systemd's socket, then for the boot to finish (as cci does before it starts the tool)
BOOTED = "until [ -S /run/systemd/private ]; do sleep 0.05; done; systemctl is-system-running --wait >/dev/null || true"
#: what cci writes before Claude starts (plugins/tools/claude.py): no onboarding, trust or bypass screens
SETTINGS = {".claude.json": {"hasCompletedOnboarding": True, "projects": {"/workspace": {"hasTrustDialogAccepted": True}}},
            ".claude/settings.json": {"skipDangerousModePermissionPrompt": True}}


def cci_shell_seconds(cci: str, workspace: Path, env: dict[str, str], text: str = BANNER) -> float:
    """One ``cci shell`` until ``text`` shows (Claude's screen); the session is killed afterwards (untimed)."""
    try:
        return seconds_to_screen(f"{cci} --workspace {workspace} shell", env, text)
    finally:
        from cci_core.naming import container_name

        sh(cci, "kill", "--force", container_name(workspace, 1), env=env)


def by_hand_script(project: str, image: str, workspace: Path, settings: Path, name: str, *, booted: bool) -> str:
    """The incus CLI commands that start Claude Code as cci does, as one shell line (``booted``: once systemd is up)."""
    from cci_builtin_plugins.incus.driver import IncusDriver
    from tests.integration.conftest import RESTRICTED_NETWORK

    incus = f"incus --project {project}"
    config = " ".join(f"-c {shlex.quote(f'{key}={value}')}" for key, value in IncusDriver.base_config.items())
    push = " && ".join(f"{incus} file push --create-dirs --uid 1000 --gid 1000 --mode 0600 {settings / relative} "
                       f"{name}/home/code/{relative}" for relative in SETTINGS)
    return " && ".join((
        f"{incus} init -q {image} {name} {config}",
        f"{incus} config device add -q {name} workspace disk source={workspace} path=/workspace shift=true",
        f"{incus} config device add -q {name} eth0 nic network={RESTRICTED_NETWORK} name=eth0 "
        "security.port_isolation=true security.mac_filtering=true security.ipv4_filtering=true",
        f"{incus} start {name}",
        push,
        *([f"{incus} exec {name} -- sh -c {shlex.quote(BOOTED)}"] if booted else []),
        f"{incus} exec -t {name} -- su - code -c 'cd /workspace && claude --dangerously-skip-permissions "
        f"--session-id {uuid.uuid4()}'",
    ))


def write_settings(directory: Path) -> Path:
    for relative, content in SETTINGS.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(json.dumps(content))
    return directory


def main() -> int:
    args = incus_options(__doc__, 5, os.environ.get("CCI_TEST_CLAUDE_IMAGE", "cci-test-claude"))

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        workspace = scratch / "workspace"
        workspace.mkdir()
        env = session_environment(scratch, args.project, args.image)
        settings = write_settings(scratch / "settings")
        name = "bench-claude-floor"

        def by_hand(booted: bool) -> float:
            script = by_hand_script(args.project, args.image, workspace, settings, name, booted=booted)
            try:
                return seconds_to_screen(script, env, BANNER)
            finally:
                sh("incus", "--project", args.project, "delete", "--force", name)

        cci_shell_seconds(args.cci, workspace, env)  # warm-up; makes the policy network the floor uses too
        by_hand(False)
        ours: list[float] = []
        floor: list[float] = []
        after_boot: list[float] = []
        for _ in range(args.runs):
            ours.append(cci_shell_seconds(args.cci, workspace, env) * 1000)
            floor.append(by_hand(False) * 1000)
            after_boot.append(by_hand(True) * 1000)
        print(f"{'':<34}{'cci ms':>10}{'p90':>9}{'floor ms':>11}{'ratio':>8}   ({args.runs} runs each, {args.image})")
        report("cci shell to Claude's screen", median_p90(ours), median_p90(floor), 1.15)
        report("  floor waiting for the boot too", median_p90(ours), median_p90(after_boot), 1.15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
