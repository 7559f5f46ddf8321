"""`cci run` and `cci container exec` as Unix commands, on a real Incus: standard input streamed to the command
(with its end of file), a terminal when cci has one, and signals passed on to the command."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cci_core.config import Config
from tests.integration.conftest import CCI, in_workspace
from tests.integration.terminal import Terminal

if TYPE_CHECKING:
    import pylxd

    from plugins.incus.driver import IncusDriver

#: what the command says of its standard streams
TERMINALS = "test -t 0 && echo in-tty || echo in-pipe; test -t 1 && echo out-tty || echo out-pipe"


def test_50_mb_piped_through_a_run_arrive_whole_and_cci_holds_little_of_them(
        config: Config, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "input"
    with data.open("wb") as out:
        for _ in range(50):
            out.write(os.urandom(1 << 20))
    output = tmp_path / "output"
    with data.open("rb") as source, output.open("wb") as sink:
        process = subprocess.Popen([str(CCI), "--workspace", str(config.workspace), "run", "--", "sha256sum"],
                                   stdin=source, stdout=sink, stderr=subprocess.PIPE, env=cci_environ)
        peak = 0
        while process.poll() is None:  # its own high-water mark (rusage would count the processes it waits for)
            peak = max(peak, high_water_kib(process.pid))
            time.sleep(0.05)
    assert process.returncode == 0
    assert output.read_text().split()[0] == hashlib.sha256(data.read_bytes()).hexdigest()
    # cci alone takes about 30 MiB: a copy of the input would be 50 more
    assert 0 < peak < 45 * 1024, peak
    assert in_workspace(incus, config.workspace) == []


def high_water_kib(pid: int) -> int:
    """The most memory process ``pid`` has held so far (``VmHWM``, KiB); 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def test_input_reaches_the_command_with_its_end_and_output_stays_apart(
        config: Config, driver: IncusDriver, cci_environ: dict[str, str]) -> None:
    result = subprocess.run([str(CCI), "--workspace", str(config.workspace), "run", "--", "sh", "-c",
                             "wc -c; cat >&2 </dev/null; echo to-stderr >&2; " + TERMINALS],
                            input="twelve bytes", env=cci_environ, capture_output=True, text=True, timeout=120,
                            check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "12\nin-pipe\nout-pipe\n", "to-stderr\n")


def test_container_exec_passes_input_with_and_without_capture(launched: str, cci_environ: dict[str, str]) -> None:
    streamed = subprocess.run([str(CCI), "container", "exec", launched, "--", "sh", "-c", "tr a-z A-Z; exit 3"],
                              input="quiet", env=cci_environ, capture_output=True, text=True, timeout=60, check=False)
    assert (streamed.returncode, streamed.stdout) == (3, "QUIET")
    captured = subprocess.run([str(CCI), "container", "exec", launched, "--capture", "--", "wc", "-c"],
                              input="four", env=cci_environ, capture_output=True, text=True, timeout=60, check=False)
    assert (captured.returncode, captured.stdout) == (0, '{"exit_code": 0, "stdout": "4\\n", "stderr": ""}\n')


def test_from_a_terminal_the_command_gets_one_that_follows_the_window(
        config: Config, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal,
        cci_environ: dict[str, str]) -> None:
    script = f"{TERMINALS}; stty size; read line; stty size; echo got-$line; exit 4"
    terminal.start("one", f"{CCI} --workspace {config.workspace} run -- sh -c '{script}'",
                   {**cci_environ, "TERM": "xterm"})
    screen = terminal.wait_for("one", "in-tty\nout-tty\n30 120\n")
    terminal.tmux("resize-window", "-t", "one", "-x", "100", "-y", "40")
    time.sleep(0.5)  # (the resize reaches cci as SIGWINCH, then the command's terminal)
    terminal.keys("one", "typed", "Enter")
    screen = terminal.wait_for("one", "CCI-EXITED-4")
    assert "40 100\ngot-typed\n" in screen, screen
    terminal.start("two", f"{CCI} --workspace {config.workspace} run -T -- sh -c '{TERMINALS}' </dev/null",
                   {**cci_environ, "TERM": "xterm"})
    screen = terminal.wait_for("two", "CCI-EXITED-0")
    assert "in-pipe\nout-pipe\n" in screen, screen
    assert in_workspace(incus, config.workspace) == []


def test_ctrl_c_on_a_terminal_reaches_the_command(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                                   terminal: Terminal, cci_environ: dict[str, str]) -> None:
    terminal.start("one", f"{CCI} --workspace {config.workspace} run -- sh -c 'echo waiting; sleep 60'",
                   {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("one", "waiting")
    terminal.keys("one", "C-c")
    terminal.wait_for("one", "CCI-EXITED-130")
    assert in_workspace(incus, config.workspace) == []


def start_run(config: Config, cci_environ: dict[str, str], script: str) -> subprocess.Popen[str]:
    """``cci run -- sh -c SCRIPT`` with plain pipes; returns once it printed its first line (the command runs)."""
    process = subprocess.Popen([str(CCI), "--workspace", str(config.workspace), "run", "--", "sh", "-c", script],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=cci_environ)
    assert process.stdout is not None
    assert process.stdout.readline() == "started\n", process.communicate(timeout=60)
    return process


def test_sigint_reaches_the_command_whose_trap_decides_and_the_container_goes(
        config: Config, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str]) -> None:
    process = start_run(config, cci_environ, "trap 'echo trapped; exit 5' INT; echo started; "
                                             "while :; do sleep 0.1; done")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (5, "trapped\n", "")
    assert in_workspace(incus, config.workspace) == []


def test_a_command_killed_by_a_signal_gives_128_plus_it(config: Config, driver: IncusDriver, incus: pylxd.Client,
                                                       cci_environ: dict[str, str]) -> None:
    for sent, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        process = start_run(config, cci_environ, "echo started; exec sleep 60")
        process.send_signal(sent)
        assert process.wait(timeout=60) == code, process.communicate()
    assert in_workspace(incus, config.workspace) == []


def test_a_command_that_ignores_signals_is_ended_with_its_container_at_the_third(
        config: Config, driver: IncusDriver, incus: pylxd.Client, cci_environ: dict[str, str]) -> None:
    process = start_run(config, cci_environ, "trap '' INT TERM; echo started; sleep 60")
    for _ in range(3):
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
    assert process.wait(timeout=60) == 130
    assert in_workspace(incus, config.workspace) == []
