"""A session starts its tool once the boot has set up what the session needs (basic.target), not after the whole
boot; the wait is checked against a fake systemctl, and the session manager is checked to use it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cci_core import session_readiness as session
from cci_core.session import LaunchRequest
from tests.unit.test_saved_sessions import manager


def run_wait(tmp_path: Path, basic_active_after: int | None, state: str) -> tuple[int, list[str]]:
    """Run the session wait with a fake systemctl: basic.target turns active at its Nth query (None: never), the
    system state is ``state``. Returns the exit code and the systemctl calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    socket = tmp_path / "private"  # stands for systemd's socket
    socket.touch()
    (bin_dir / "systemctl").write_text(f"""#!/bin/sh
echo "$*" >> {calls}
if [ "$1" = is-active ]; then
    n=$(grep -c is-active {calls})
    [ {basic_active_after or 0} -gt 0 ] && [ "$n" -ge {basic_active_after or 0} ]
    exit $?
fi
echo {state}
""")
    (bin_dir / "systemctl").chmod(0o755)
    script = session._WAIT_FOR_SESSION.replace("[ -S /run/systemd/private ]", f"[ -e {socket} ]")
    assert script != session._WAIT_FOR_SESSION
    result = subprocess.run(["timeout", "10", "sh", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                            check=False)
    return result.returncode, calls.read_text().splitlines()


def test_the_wait_ends_when_basic_target_is_active_while_the_boot_goes_on(tmp_path: Path) -> None:
    code, calls = run_wait(tmp_path, basic_active_after=3, state="starting")
    assert code == 0
    assert [call for call in calls if call.startswith("is-active")] == ["is-active --quiet basic.target"] * 3
    assert not any("--wait" in call for call in calls)


def test_the_wait_ends_when_the_boot_is_over_without_basic_target(tmp_path: Path) -> None:
    code, calls = run_wait(tmp_path, basic_active_after=None, state="degraded")
    assert code == 0 and calls == ["is-active --quiet basic.target", "is-system-running"]


@pytest.mark.parametrize("state", ["initializing", "starting"])
def test_the_wait_goes_on_while_the_system_boots(tmp_path: Path, state: str) -> None:
    code, calls = run_wait(tmp_path, basic_active_after=5, state=state)
    assert code == 0 and calls.count("is-system-running") == 4


def test_a_session_launch_waits_for_what_the_session_needs_not_the_whole_boot(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    container, _ = manager(tmp_path).launch(LaunchRequest(workspace))
    waits = [argv for argv in container.commands if argv[:1] == ("timeout",)]  # type: ignore[attr-defined]
    assert waits == [("timeout", str(session.BOOT_TIMEOUT), "sh", "-c", session._WAIT_FOR_SESSION)]
    assert "basic.target" in waits[0][-1] and "is-system-running --wait" not in waits[0][-1]


def test_state_and_credentials_go_in_while_the_boot_goes_on_and_post_launch_comes_after_the_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """They write only under the user's home, which the boot does not touch: done while the wait goes on (on a
    thread of its own), they cost no time; post_launch comes once the wait is over."""
    import threading

    from cci_core import hookimpl
    from cci_core import session as lifecycle

    injected = threading.Event()
    seen: list[str] = []

    def wait(container: object) -> None:
        seen.append("wait begins")
        seen.append("credentials during the wait" if injected.wait(10) else "credentials not during the wait")
        seen.append("wait over")

    class Order:
        @hookimpl
        def cci_inject_credentials(self, ctx, container):  # type: ignore[no-untyped-def]
            injected.set()

        @hookimpl
        def cci_post_launch(self, ctx, container):  # type: ignore[no-untyped-def]
            seen.append("post_launch")

    monkeypatch.setattr(lifecycle, "wait_for_session", wait)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    manager(tmp_path, Order()).launch(LaunchRequest(workspace))
    assert seen == ["wait begins", "credentials during the wait", "wait over", "post_launch"]


def test_a_boot_that_fails_fails_the_launch_after_the_credentials_went_in(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_core import session as lifecycle
    from cci_core.errors import BackendError

    def wait(container: object) -> None:
        raise BackendError("running timeout in cci-x: the container stopped")

    monkeypatch.setattr(lifecycle, "wait_for_session", wait)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    sessions = manager(tmp_path)
    with pytest.raises(BackendError, match="the container stopped"):
        sessions.launch(LaunchRequest(workspace))
    assert sessions.driver.containers == {}  # type: ignore[attr-defined]  (nothing half-made is left)


def test_cci_shell_starts_tmux_in_a_container_it_just_launched_without_asking_whether_one_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container made a moment ago has no tmux session: asking would be one more request before the tool starts."""
    from click.testing import CliRunner

    from cci_core.cli import shell_cmds
    from cci_core.cli.main import cli
    from cci_core.tmux import AttachEnd, TmuxSession

    sessions = manager(tmp_path)
    attached: list[object] = []
    monkeypatch.setattr(shell_cmds, "manager_for", lambda ctx: sessions)
    monkeypatch.setattr(shell_cmds, "_require_terminal", lambda command: None)
    monkeypatch.setattr(shell_cmds, "check_network_policy", lambda ctx: None)
    monkeypatch.setattr(TmuxSession, "attach", lambda tmux: attached.append(tmux.container) or AttachEnd.DETACHED)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    result = CliRunner().invoke(cli, ["--workspace", str(workspace), "shell"], env={"CCI_NETWORK_MODE": "open"})
    assert result.exit_code == 0, result.output
    [container] = attached
    tmux = [argv[1] for argv in container.commands if argv[:1] == ("tmux",)]  # type: ignore[attr-defined]
    assert tmux == ["new-session"]
