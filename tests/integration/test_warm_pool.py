"""The warm pool (``[pool] size``) on the real Incus: launches take ready containers, nothing of an earlier session
is ever in one, racing launches and refills each get their own container, the workspace guard still holds, and
``cci clean`` removes what no launch will take.

Every test runs cci as the non-root test user with a home and workspaces of its own (under /tmp, which the user can
reach), and with a ``[limits] processes`` value no other test uses: the limits are part of the pool key
(:func:`cci_core.warm_pool.pool_key`), so no test's launch can take another's pool containers (nor those of anyone
else using the test project), and the instances with that ``limits.processes`` are exactly this test's. The fixture
waits for the background processes (the refill, the detached ends) of the test's home to finish, then deletes the
test's containers, whatever the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cci_core.config import Config
from cci_core.naming import container_name
from tests import incus_env
from tests.integration.conftest import CCI, LABEL_PREFIX, labels_on, wait_until_gone
from tests.stand_in import CONFIG as STAND_IN_CONFIG

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

USER = incus_env.TEST_USER
#: runs a command as the test user with the environment given (runuser alone would set HOME to the user's own)
AS_USER = ("runuser", "--preserve-environment", "-u", USER, "--")
POOL_PREFIX = "cci-pool-"
#: the detached processes a cci command leaves behind: the refill of a pool, the end of a 'cci run'
HELPERS = ("cci_core.cli.pool_fill", "cci_core.cli.detached_end")
CREDENTIAL = '{"token": "stand-in-credential-pool"}'
#: what the stand-in tool's credential injection and sandbox settings put into a session's home
STAND_IN_HOME_FILES = (".stand-in/credentials.json", ".stand-in/settings.json", ".stand-in/BRIEF.md")
#: the container user's home
HOME = "/home/code"


def _helpers_of(home: Path) -> list[int]:
    """Pids of the detached cci processes (:data:`HELPERS`) started from cci commands run with ``HOME=home``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if not any(helper.encode() in cmdline for helper in HELPERS):
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if f"HOME={home}".encode() in environ:
            pids.append(int(entry.name))
    return pids


class Pool:
    """One test's warm pool: the test user's home, workspaces and ``[limits] processes`` (the pool key) of its own."""

    def __init__(self, root: Path, environ: dict[str, str], incus: pylxd.Client) -> None:
        self.root = root
        self.home = root / "home"
        self.incus = incus
        # a value no other test (or run) uses: it changes the pool key, and marks this test's instances
        self.processes = str(20000 + uuid.uuid4().int % 100000)
        self.environ = {**environ, "HOME": str(self.home), "CCI_LIMITS_PROCESSES": self.processes}

    def workspace(self, name: str) -> Path:
        """A new workspace of the test user's."""
        path = self.root / name
        path.mkdir()
        shutil.chown(path, USER, USER)
        return path

    def env(self, size: int, **extra: str) -> dict[str, str]:
        return {**self.environ, "CCI_POOL_SIZE": str(size), **extra}

    def cci(self, *args: str, workspace: Path | None = None, size: int = 2, timeout: float = 120,
            **extra: str) -> subprocess.CompletedProcess[str]:
        """Run cci as the test user (in ``workspace``) with a pool of ``size``."""
        where = ("--workspace", str(workspace)) if workspace is not None else ()
        return subprocess.run([*AS_USER, str(CCI), *where, *args], env=self.env(size, **extra), cwd="/",
                              capture_output=True, text=True, timeout=timeout, check=False)

    def popen(self, *args: str, workspace: Path, size: int = 2) -> subprocess.Popen[str]:
        return subprocess.Popen([*AS_USER, str(CCI), "--workspace", str(workspace), *args],
                                env=self.env(size), cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def instances(self) -> list[Any]:
        """This test's instances (pool containers, taken or not, and the sessions made without the pool)."""
        return [instance for instance in self.incus.instances.all(recursion=1)
                if instance.config.get("limits.processes") == self.processes]

    def untaken(self) -> dict[str, tuple[str, str]]:
        """This test's pool containers no launch has taken: name -> (``pool`` label, status)."""
        return {instance.name: (instance.config.get(LABEL_PREFIX + "pool", ""), str(instance.status).lower())
                for instance in self.instances() if instance.config.get(LABEL_PREFIX + "kind") == "pool"}

    def log(self) -> str:
        logs = self.home / ".cci" / "logs"
        return "\n".join(f"{path.name}: {path.read_text()}" for path in sorted(logs.glob("*"))) if logs.is_dir() \
            else "(no logs)"

    def settle(self, timeout: float = 90) -> list[str]:
        """Once the detached processes of this test's cci commands are done (the refill: the pool whole again; the
        ends: the taken containers deleted), the names of the ready pool containers (none may be warming)."""
        deadline = time.monotonic() + timeout
        while _helpers_of(self.home):
            assert time.monotonic() < deadline, f"background processes still at work after {timeout} s: " \
                                                f"{self.untaken()}; {self.log()}"
            time.sleep(0.1)
        untaken = self.untaken()
        assert all(state == ("ready", "running") for state in untaken.values()), (untaken, self.log())
        return sorted(untaken)

    def remove_all(self) -> None:
        """Stop any detached process still at work for this test (it failed), then delete this test's instances."""
        from pylxd.exceptions import LXDAPIException, NotFound

        for pid in _helpers_of(self.home):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for instance in self.instances():
            try:
                if str(instance.status).lower() != "stopped":
                    instance.stop(force=True, wait=True)
                instance.delete(wait=True)
            except (NotFound, LXDAPIException):
                pass  # deleted meanwhile by a detached end, say; checked below
        for instance in self.instances():
            wait_until_gone(self.incus, instance.name, 30)
        assert self.instances() == [], "containers of this test are left"


@pytest.fixture
def pool(cci_environ: dict[str, str], incus: pylxd.Client) -> Iterator[Pool]:
    """This test's pool; afterwards its background processes are waited for and its containers deleted."""
    root = Path("/tmp") / f"cci-pool-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    (root / "home").mkdir(parents=True)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(root)], check=True)
    pool = Pool(root, cci_environ, incus)
    try:
        yield pool
    finally:
        try:
            pool.settle()
        finally:
            try:
                pool.remove_all()
            finally:
                shutil.rmtree(root, ignore_errors=True)


def fill(pool: Pool, workspace: Path, size: int) -> list[str]:
    """Make the pool of ``size`` ready: a first launch finds it empty and runs in a container of its own (its
    workspace's slot 1), the refill it starts warms ``size`` containers; their names."""
    result = pool.cci("run", "--", "hostname", workspace=workspace, size=size)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == container_name(workspace, 1)  # nothing was ready: not a pool container
    ready = pool.settle()
    assert len(ready) == size, (ready, pool.log())
    assert all(name.startswith(POOL_PREFIX) for name in ready)
    keys = {labels_on(pool.incus, name)["pool-key"] for name in ready}
    assert len(keys) == 1, keys
    return ready


def in_workspace_now(incus: pylxd.Client, workspace: Path) -> list[str]:
    return [instance.name for instance in incus.instances.all(recursion=1)
            if instance.config.get(LABEL_PREFIX + "workspace") == str(workspace)]


def test_a_run_takes_a_ready_container_sees_its_workspace_and_the_pool_is_refilled(
        pool: Pool, incus: pylxd.Client) -> None:
    workspace = pool.workspace("ws")
    ready = fill(pool, workspace, 2)
    for name in ready:  # a ready container: started, labelled, of no workspace
        instance = incus.instances.get(name)
        labels = labels_on(incus, name)
        assert str(instance.status).lower() == "running"
        assert {key: labels.get(key) for key in ("kind", "pool", "image")} == {
            "kind": "pool", "pool": "ready", "image": incus_env.IMAGE}
        assert "workspace" not in labels and "slot" not in labels

    result = pool.cci("run", "--", "sh", "-c", "hostname; pwd; echo from-inside > /workspace/made-inside",
                      workspace=workspace)
    assert result.returncode == 0, result.stderr
    hostname, cwd = result.stdout.split()
    assert hostname in ready and cwd == "/workspace"
    made = workspace / "made-inside"
    assert made.read_text() == "from-inside\n"
    user = os.stat(workspace)
    assert (made.stat().st_uid, made.stat().st_gid) == (user.st_uid, user.st_gid) != (0, 0)

    refilled = pool.settle()  # the taken container is deleted at its end, and the pool is whole again
    assert not incus.instances.exists(hostname)
    assert len(refilled) == 2 and hostname not in refilled, refilled
    assert set(ready) - {hostname} <= set(refilled)  # the one not taken is still there
    assert in_workspace_now(incus, workspace) == []


def test_a_pooled_container_carries_nothing_of_an_earlier_session(pool: Pool, incus: pylxd.Client) -> None:
    from cci_stand_in_tool import SCRIPT

    # workspace A: the stand-in tool (the host user has its credential) and a variable set by its trusted config
    first = pool.workspace("ws-a")
    shutil.copy(SCRIPT, first / ".stand-in")
    (first / ".stand-in").chmod(0o755)
    (first / ".cci.toml").write_text(STAND_IN_CONFIG + '\n[defaults]\nenvironment = { FOO = "secret" }\n')
    (first / "only-in-a").touch()
    (pool.home / ".stand-in").mkdir()
    (pool.home / ".stand-in" / "credentials.json").write_text(CREDENTIAL)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(first), str(pool.home)], check=True)
    trust = pool.cci("config", "trust", workspace=first)
    assert trust.returncode == 0, trust.stderr
    second = pool.workspace("ws-b")
    (second / "only-in-b").touch()
    fill(pool, first, 2)

    marked = pool.cci("run", "--", "sh", "-c", f'hostname; echo "FOO=${{FOO-unset}}"; echo marker > {HOME}/marker',
                      workspace=first)
    assert marked.returncode == 0, marked.stderr
    marked_host, foo = marked.stdout.split()
    assert marked_host.startswith(POOL_PREFIX) and foo == "FOO=secret"

    # a headless session of the stand-in tool in a pooled container: its credential and settings are injected
    headless = pool.popen("run", "--prompt", "wait go\n", workspace=first)
    try:
        deadline = time.monotonic() + 60
        while not (running := [instance for instance in incus.instances.all(recursion=1)
                               if instance.config.get(LABEL_PREFIX + "workspace") == str(first)
                               and instance.config.get(LABEL_PREFIX + "state") == "running"]):
            assert headless.poll() is None, headless.communicate()
            assert time.monotonic() < deadline, "the headless session did not start"
            time.sleep(0.1)
        (session,) = running
        assert session.name.startswith(POOL_PREFIX) and session.name != marked_host
        seen = session.execute(["sh", "-c", f"cd {HOME} && cat {' '.join(STAND_IN_HOME_FILES)}"])
        assert seen.exit_code == 0 and CREDENTIAL in seen.stdout, seen
        (first / "go").touch()
        out, err = headless.communicate(timeout=120)
    finally:
        headless.kill()
    assert headless.returncode == 0 and "answer: wait go" in out, (out, err)

    ready = pool.settle()
    assert len(ready) == 2 and not {marked_host, session.name} & set(ready)
    for name in ready:  # nothing of a workspace, a session, the host user's tool
        instance = incus.instances.get(name)
        assert [device for device in instance.expanded_devices.values() if device.get("type") == "disk"
                and "source" in device] == []
        assert not [key for key in instance.config if key.startswith("environment.")]
        labels = labels_on(incus, name)
        assert not {"workspace", "slot", "session", "tool"} & set(labels), labels
        probe = f"cd {HOME} && for path in marker .stand-in {' '.join(STAND_IN_HOME_FILES)} .claude .claude.json; " \
                "do [ -e $path ] && echo $path; done; grep -rl stand-in-credential /home /root /tmp; true"
        found = instance.execute(["sh", "-c", probe])
        assert (found.exit_code, found.stdout) == (0, ""), found

    later = pool.cci("run", "--", "sh", "-c", f"hostname; env; ls -A {HOME} /workspace", workspace=second)
    assert later.returncode == 0, later.stderr
    lines = later.stdout.splitlines()
    assert lines[0] in ready and lines[0] not in (marked_host, session.name)
    assert not any(line.startswith("FOO=") for line in lines) and "secret" not in later.stdout
    for leftover in ("marker", ".stand-in", "only-in-a"):
        assert leftover not in lines, later.stdout
    assert "only-in-b" in lines


def test_racing_launches_and_refills_each_get_a_container_of_their_own(pool: Pool, incus: pylxd.Client) -> None:
    workspace = pool.workspace("ws")
    ready = fill(pool, workspace, 2)
    runs = 5
    # (the name is written whole, then renamed: a file the test sees is complete)
    script = 'hostname > /workspace/.host-$0 && mv /workspace/.host-$0 /workspace/host-$0; i=0; ' \
             'while [ ! -e /workspace/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done'
    with ThreadPoolExecutor(max_workers=runs) as executor:
        futures = [executor.submit(pool.cci, "run", "--", "sh", "-c", script, str(number), workspace=workspace,
                                   timeout=180) for number in range(runs)]
        try:
            deadline = time.monotonic() + 120
            while len(list(workspace.glob("host-*"))) < runs:
                # the refills race with the launches: never more untaken pool containers than the size
                assert len(pool.untaken()) <= 2, pool.untaken()
                failed = [future.result() for future in futures if future.done()]
                assert not failed, [(result.returncode, result.stderr) for result in failed]
                assert time.monotonic() < deadline, "the runs did not all start"
                time.sleep(0.1)
            hosts = [(workspace / f"host-{number}").read_text().strip() for number in range(runs)]
            # all run at once now: each in a container of its own, in a slot of its own
            assert len(set(hosts)) == runs, hosts
            labels = {name: labels_on(incus, name) for name in hosts}
            assert sorted(int(label["slot"]) for label in labels.values()) == list(range(1, runs + 1)), labels
            for name, label in labels.items():
                assert (label["kind"], label["workspace"], label["state"]) == ("run", str(workspace), "running")
                if name.startswith(POOL_PREFIX):
                    assert label["pool"] == "taken", label
                else:  # made for the launch: named after its slot
                    assert name == container_name(workspace, int(label["slot"])) and "pool" not in label
            listed = json.loads(pool.cci("list", "--format", "json").stdout)["containers"]
            assert sorted((row["name"], row["slot"]) for row in listed if row["workspace"] == str(workspace)) == \
                sorted((name, int(label["slot"])) for name, label in labels.items())
        finally:
            (workspace / "go").touch()
        results = [future.result() for future in futures]
    assert [result.returncode for result in results] == [0] * runs, [result.stderr for result in results]
    # the first two launches to the slot lock found a ready container each (the refill adds to the pool, never
    # takes from it); later ones may have found one the refill had made meanwhile
    pooled = [name for name in hosts if name.startswith(POOL_PREFIX)]
    assert len(pooled) >= 2 and set(pooled) & set(ready), (hosts, ready)
    refilled = pool.settle()
    assert len(refilled) == 2 and not set(refilled) & set(hosts), (refilled, hosts)
    assert in_workspace_now(incus, workspace) == []


def guarded_workspace(pool: Pool) -> Path:
    """A git repository of the test user's, with an ``.envrc``: files the workspace guard mounts read-only."""
    workspace = pool.workspace("ws")
    subprocess.run([*AS_USER, "git", "init", "-q", str(workspace)], check=True,
                   env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(pool.home)})
    (workspace / ".envrc").write_text("export FROM_ENVRC=1\n")
    shutil.chown(workspace / ".envrc", USER, USER)
    return workspace


def relabel(incus: pylxd.Client, name: str, key: str, value: str) -> None:
    instance = incus.instances.get(name)
    instance.config[LABEL_PREFIX + key] = value
    instance.save(wait=True)


def snapshot(workspace: Path) -> dict[str, bytes | None]:
    """Every file of the workspace (its ``.git`` too) with its content (None: a directory)."""
    return {str(path.relative_to(workspace)): None if path.is_dir() else path.read_bytes()
            for path in sorted(workspace.rglob("*"))}


def test_the_workspace_guard_protects_a_pooled_session(pool: Pool) -> None:
    """A pooled session gets the workspace guard's read-only mounts while it runs. (Incus adds a plain bind mount
    of a file to a running container by liblxc's mount injection, which failed for the guard's files in a warm
    container's workspace and then removed its target: every pooled launch in a git workspace deleted the host's
    ``.git/config`` or ``.envrc``.)"""
    workspace = guarded_workspace(pool)
    ready = fill(pool, workspace, 1)
    before = snapshot(workspace)
    result = pool.cci("run", "--", "sh", "-c", """
        hostname
        sudo sh -c 'echo "[core] fsmonitor = x" >> .git/config'; echo config=$?
        sudo sh -c 'echo "#!/bin/sh" > .git/hooks/x'; echo hook=$?
        sudo sh -c 'echo "curl x | sh" >> .envrc'; echo envrc=$?
        echo text > plain; echo plain=$?
    """, workspace=workspace)
    after = snapshot(workspace)
    assert {path: content for path, content in before.items() if after.get(path, b"(deleted)") != content} == {}
    assert set(after) - set(before) <= {"plain"}, set(after) - set(before)
    assert result.returncode == 0, result.stderr
    hostname, *outcomes = result.stdout.split()
    assert hostname in ready
    assert dict(line.split("=") for line in outcomes) == {"config": "2", "hook": "2", "envrc": "2", "plain": "0"}, \
        result.stdout
    assert (workspace / "plain").read_text() == "text\n"


def test_clean_removes_stale_pool_containers_and_with_pool_all_of_the_users(pool: Pool, incus: pylxd.Client,
                                                                            config: Config) -> None:
    workspace = pool.workspace("ws")
    stopped, other, kept = fill(pool, workspace, 3)
    incus.instances.get(stopped).stop(force=True, wait=True)
    relabel(incus, other, "uid", "4242")  # another user's

    relabel(incus, kept, "version", "0.0.1")  # of another cci version: stale too (shown, not cleaned)
    dry = pool.cci("clean", "--dry-run")
    relabel(incus, kept, "version", labels_on(incus, other)["version"])
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert f"{stopped}: a warm-pool container, stopped: delete" in lines, dry.stdout
    assert f"{kept}: a warm-pool container of cci 0.0.1: delete" in lines, dry.stdout
    assert not [line for line in lines if line.startswith(f"{other}:")], dry.stdout
    done = pool.cci("clean", "--force")
    assert done.returncode == 0, done.stderr
    assert f"{stopped}: a warm-pool container, stopped: delete" in done.stdout.splitlines(), done.stdout
    assert not incus.instances.exists(stopped)
    assert pool.untaken() == {kept: ("ready", "running"), other: ("ready", "running")}

    # --pool: all of the user's not taken. What it would delete is shown (--dry-run), and carried out for this
    # test's alone: run for real, it would also delete the test user's pool containers of anyone else using the
    # test project and user (a concurrent run, a benchmark).
    dry = pool.cci("clean", "--pool", "--dry-run")
    lines = dry.stdout.splitlines()
    assert f"{kept}: a warm-pool container: delete" in lines, dry.stdout
    assert not [line for line in lines if line.startswith(f"{other}:")], dry.stdout
    from cci_core.plugin_manager import load_plugins
    from cci_core.session import Cleanup, SessionManager
    from cci_builtin_plugins.incus.driver import IncusDriver

    driver = IncusDriver(config)
    manager = SessionManager(config, driver, load_plugins(entry_points=False))
    manager.clean(Cleanup([], [], [(info, "a warm-pool container") for info in driver.list_containers()
                                   if info.name == kept]))
    assert pool.untaken() == {other: ("ready", "running")}


def test_a_ready_container_gone_before_the_take_is_passed_by(pool: Pool, incus: pylxd.Client, config: Config,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch takes from the listing its open() made (unless a slot was claimed since): a container listed there
    may be gone by then (taken and ended by a launch in another workspace, removed by 'cci clean --pool' or a
    refill); the launch must take another, or make its own, not fail."""
    import random

    from cci_core.slots import slot_claims
    from cci_core.warm_pool import PoolTarget, take
    from cci_builtin_plugins.incus.driver import IncusDriver

    workspace = pool.workspace("ws")
    gone, left = fill(pool, workspace, 2)
    labels = labels_on(incus, gone)
    target = PoolTarget(labels["pool-key"], incus_env.IMAGE, labels["pool-image"], None, labels["network"])
    driver = IncusDriver(config)
    claims = slot_claims(workspace)
    listing = sorted(driver.list_containers(), key=lambda info: info.name != gone)  # the gone one tried first
    monkeypatch.setattr(random, "shuffle", lambda items: None)
    instance = incus.instances.get(gone)
    instance.stop(force=True, wait=True)
    instance.delete(wait=True)
    taken = take(driver, workspace, target, lambda slot: {"kind": "run", "workspace": str(workspace),
                                                          "slot": str(slot)}, listing, claims)
    assert taken is not None and taken.name == left
    assert labels_on(incus, left)["pool"] == "taken"


def test_a_lowered_size_leaves_that_many(pool: Pool) -> None:
    workspace = pool.workspace("ws")
    ready = fill(pool, workspace, 3)
    result = pool.cci("run", "--", "hostname", workspace=workspace, size=1)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ready
    left = pool.settle()
    assert len(left) == 1 and set(left) <= set(ready), left  # the surplus removed, none made
