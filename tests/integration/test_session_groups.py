"""Commands run as the container user get the user's groups from the container's /etc/group, as a login would.

Incus's exec API sets only a uid and a gid; cci switches to the user with setpriv instead
(see plugins/incus/execute.py). Checked in ``cci run``, ``cci container exec --user`` and a
``cci shell`` session, with groups the image gives the user and groups added inside.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from collections.abc import Iterator

import pytest

from cci_core.config import Config
from cci_core.driver import ContainerSpec
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import CCI, run_cci, status_of, unique_name
from tests.integration.terminal import Terminal
from tests.integration.test_shell import start_shell

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

#: the group the derived test image gives the user ``code``
IMAGE_GROUP = "cci-extra"


@pytest.fixture
def image_with_group(driver: IncusDriver, incus: pylxd.Client) -> Iterator[str]:
    """An image made from the test image in which ``code`` is also in :data:`IMAGE_GROUP`; deleted afterwards."""
    name = unique_name()
    container = driver.create(ContainerSpec(name, incus_env.IMAGE, labels={}))  # never started: files only
    groups = container.pull_file("/etc/group").decode()
    container.push_file("/etc/group", f"{groups}{IMAGE_GROUP}:x:3901:code\n".encode(), mode=0o644)
    alias = f"{name}-image"
    publishing = incus.api.images.post(json={"source": {"type": "instance", "name": name},
                                             "compression_algorithm": "none", "aliases": [{"name": alias}]})
    incus.operations.wait_for_operation(publishing.json()["operation"])
    try:
        yield alias
    finally:
        driver.delete_image(alias)


def test_cci_run_gets_the_groups_the_image_gives_the_user(config: Config, cci_environ: dict[str, str],
                                                          image_with_group: str) -> None:
    environ = {**cci_environ, "CCI_DEFAULTS_IMAGE": image_with_group}
    result = run_cci("--workspace", str(config.workspace), "run", "--", "id", "-Gn", env=environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["code", IMAGE_GROUP]
    env = run_cci("--workspace", str(config.workspace), "run", "--", "sh", "-c", "echo $HOME $USER; exit 3",
                  env=environ)
    assert (env.returncode, env.stdout) == (3, "/home/code code\n"), env.stderr


def test_container_exec_reads_the_groups_at_each_command_and_runs_a_uid_without_an_entry(
    launched: str, cci_environ: dict[str, str]
) -> None:
    before = run_cci("container", "exec", "--user", "1000", launched, "--", "id", "-Gn", env=cci_environ)
    assert (before.returncode, before.stdout) == (0, "code\n"), before.stderr
    added = run_cci("container", "exec", launched, "--", "sh", "-c",
                    "groupadd added-inside && usermod -aG added-inside code", env=cci_environ)
    assert added.returncode == 0, added.stderr
    after = run_cci("container", "exec", "--user", "1000", launched, "--", "id", "-Gn", env=cci_environ)
    assert (after.returncode, after.stdout) == (0, "code added-inside\n"), after.stderr
    # Incus adds HOME and USER for root only: a user's command does not get root's
    env = run_cci("container", "exec", "--user", "1000", launched, "--", "sh", "-c", "echo ${HOME-none} ${USER-none}",
                  env=cci_environ)
    assert env.stdout == "none none\n", env.stderr
    nobody = run_cci("container", "exec", "--user", "4242", "--group", "4343", launched, "--", "id", env=cci_environ)
    assert (nobody.returncode, nobody.stdout) == (0, "uid=4242 gid=4343 groups=4343\n"), nobody.stderr


def test_a_group_added_in_the_shell_is_in_the_next_shell_which_follows_resizes(
    config: Config, driver: IncusDriver, incus: pylxd.Client, terminal: Terminal, cci_environ: dict[str, str]
) -> None:
    name = start_shell(terminal, config, cci_environ)
    terminal.keys("one", "sudo groupadd added-inside && sudo usermod -aG added-inside code && echo added-$((6*7))",
                  "Enter")
    terminal.wait_for("one", "added-42")
    terminal.keys("one", "exit", "Enter")  # the tmux session ends; attach starts a new one
    terminal.wait_for("one", "CCI-EXITED-0")
    terminal.start("two", f"{CCI} attach {name}", {**cci_environ, "TERM": "xterm"})
    terminal.wait_for("two", f"code@{name}:/workspace$")
    # the terminal of the attach (tmux's client) is the user's, as when Incus switched to the user itself
    terminal.keys("two", "echo groups-$((6*7)): $(id -Gn) tty-owner: "
                  "$(stat -L -c %U /proc/$(pgrep -of 'tmux attach')/fd/0)", "Enter")
    screen = terminal.wait_for("two", "groups-42:")
    assert "groups-42: code added-inside tty-owner: code" in screen, screen
    terminal.tmux("resize-window", "-t", "two", "-x", "100", "-y", "25")
    # the new size travels host tmux -> cci -> Incus -> the inner tmux -> the pane: ask until it has arrived
    deadline = time.monotonic() + 30
    while True:
        terminal.keys("two", "echo columns-$(stty size | cut -d' ' -f2)", "Enter")
        try:
            terminal.wait_for("two", "columns-100", timeout=2)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    terminal.keys("two", "exit", "Enter")
    screen = terminal.wait_for("two", "CCI-EXITED-0")
    assert status_of(incus, name) == "running"
