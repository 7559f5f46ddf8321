"""``cci doctor`` without a daemon: the core checks, the hook plumbing, the output and exit code, and the
Incus plugin's decisions (subid parsing, storage and network reading, image) against a fake server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from cci_core import hookimpl
from cci_core.cli.main import cli
from cci_core.config import Config, Override, load_config
from cci_builtin_plugins.incus.settings import IncusSettings
from cci_core.doctor import (
    EXIT_FAILED,
    EXIT_OK,
    Check,
    exit_code,
    fail,
    guarded,
    ok,
    plugin_checks,
    registry_checks,
    render_json,
    render_text,
    run_checks,
    summary,
    warn,
)
from cci_core.errors import BackendError, ConfigError, NotFoundError, PluginError
from cci_core.plugin_manager import load_plugins
from cci_builtin_plugins.incus import plugin as incus_plugin
from cci_builtin_plugins.incus.doctor import (
    _Server,
    access_reason,
    delegated,
    image_check,
    proxy_image_check,
    incus_checks,
    installed_check,
    network_check,
    pool_driver_check,
    root_disk,
    storage_check,
    uid_mapping_check,
)


class StubDriver:
    """Only registered, never instantiated: the registries need nothing more than a name."""

    name = "stub"
    summary = "a driver for doctor tests"


class DoctorPlugin:
    """A plugin registering the ``stub`` driver and returning fixed doctor checks (or raising)."""

    def __init__(self, checks: Any = (), error: Exception | None = None) -> None:
        self.checks = checks
        self.error = error
        self.configs: list[Config] = []

    @hookimpl
    def cci_register(self, register) -> None:  # type: ignore[no-untyped-def]
        register.add_driver(StubDriver)

    @hookimpl
    def cci_doctor_checks(self, config: Config) -> Any:
        self.configs.append(config)
        if self.error:
            raise self.error
        return self.checks


class OtherPlugin:
    @hookimpl
    def cci_doctor_checks(self) -> list[Check]:
        return [ok("other", "still checked")]


def make_config(tmp_path: Path, **values: Any) -> Config:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    return load_config(workspace, environ={}, overrides=[Override(key, value, "test") for key, value in values.items()])


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


# --- Check, output and exit code ----------------------------------------------------------------------------------


def test_helpers_build_checks_and_ok_has_no_fix() -> None:
    assert ok("a", "fine") == Check("a", "ok", "fine", "")
    assert warn("b", "meh", "do x") == Check("b", "warn", "meh", "do x")
    assert fail("c", "broken", "do y").status == "fail"


def test_exit_code_fails_only_on_a_fail() -> None:
    assert exit_code([ok("a", ""), warn("b", "", "x")]) == EXIT_OK == 0
    assert exit_code([ok("a", ""), fail("b", "", "x"), warn("c", "", "y")]) == EXIT_FAILED == 1
    assert exit_code([]) == 0


def test_text_is_one_aligned_line_per_check_with_the_fix_of_problems() -> None:
    checks = [ok("config", "read x"), warn("storage", "dir pool", "use btrfs"),
              fail("image", "not found", "cci build"), Check("odd", "ok", "fine", "ignored fix")]
    lines = render_text(checks).splitlines()
    assert lines == [
        "ok    config   read x",
        "warn  storage  dir pool  fix: use btrfs",
        "fail  image    not found  fix: cci build",
        "ok    odd      fine",
    ]


def test_json_is_a_list_of_name_status_detail_fix() -> None:
    checks = [ok("config", "read x"), fail("image", "not found", "cci build")]
    assert json.loads(render_json(checks)) == [
        {"name": "config", "status": "ok", "detail": "read x", "fix": ""},
        {"name": "image", "status": "fail", "detail": "not found", "fix": "cci build"},
    ]


def test_summary_names_the_failed_checks() -> None:
    assert summary([ok("a", ""), warn("b", "", "")]) is None
    assert summary([fail("a", "", ""), ok("b", ""), fail("c", "", "")]) == "2 checks failed: a, c"
    assert summary([fail("a", "", "")]) == "1 check failed: a"


def test_guarded_turns_exceptions_into_fail_lines() -> None:
    def backend() -> Check:
        raise BackendError("Incus is down", hint="start it")

    def bug() -> Check:
        raise KeyError("environment")

    assert guarded("x", backend) == Check("x", "fail", "Incus is down", "start it")
    crashed = guarded("y", bug)
    assert crashed.status == "fail" and crashed.detail == "KeyError: 'environment'"
    assert "bug" in crashed.fix
    assert guarded("z", ok, "z", "fine") == ok("z", "fine")


# --- core checks ------------------------------------------------------------------------------------------------


def test_a_config_that_does_not_load_is_a_fail_line_and_the_rest_is_skipped() -> None:
    def broken() -> Config:
        raise ConfigError("expected an integer", source=".cci.toml:3", key="incus.claude_uid")

    def plugins(config: Config) -> Any:
        raise AssertionError("plugins need the config")

    checks = run_checks(broken, plugins)
    assert [(check.name, check.status) for check in checks] == [("config", "fail"), ("skipped", "warn")]
    assert checks[0].detail == ".cci.toml:3: incus.claude_uid: expected an integer"
    assert "cci config path" in checks[0].fix
    assert "plugins" in checks[1].detail and "backend" in checks[1].detail


def test_plugins_that_do_not_load_are_a_fail_line(tmp_path: Path) -> None:
    config = make_config(tmp_path)

    def broken(config: Config) -> Any:
        raise PluginError("plugin 'x' failed to import: boom", hint="disable it")

    checks = run_checks(lambda: config, broken)
    assert [(check.name, check.status) for check in checks] == [
        ("config", "ok"), ("plugins", "fail"), ("skipped", "warn")]
    assert checks[1] == Check("plugins", "fail", "plugin 'x' failed to import: boom", "disable it")
    assert exit_code(checks) == 1


def test_config_line_names_the_files_read(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / ".cci.toml").write_text('[defaults]\nimage = "mine"\n')
    config = load_config(workspace, environ={})
    checks = run_checks(lambda: config, lambda config: load_plugins(entry_points=False))
    assert checks[0] == ok("config", f"read {workspace / '.cci.toml'}")


def test_registered_driver_tool_and_policy_are_ok(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"defaults.driver": "stub", "network.mode": "open"})
    plugins = load_plugins(entry_points=False, extra=[("stubby", DoctorPlugin())])
    assert registry_checks(config, plugins) == [
        ok("driver", "stub (plugin stubby)"),
        ok("tool", "claude (plugin claude)"),
        ok("network policy", "open (plugin network-open)"),
    ]


def test_unknown_driver_tool_or_policy_fails_with_what_is_available(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"defaults.driver": "nope", "tool.name": "gone", "network.mode": "wide"})
    checks = by_name(registry_checks(config, load_plugins(entry_points=False)))
    assert checks["driver"].status == "fail"
    assert checks["driver"].detail == ("driver 'nope' is not available (plugin may not be installed); "
                                       "available: incus")
    assert checks["driver"].fix == ("install or enable the plugin that provides 'nope', or set [defaults] driver "
                                    "to one of: incus")
    assert checks["tool"].status == "fail" and "[tool] name" in checks["tool"].fix
    assert checks["network policy"].status == "fail"
    assert "allowlist, open, proxy, restricted" in checks["network policy"].fix


def test_a_disabled_plugin_makes_its_tool_unavailable(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"network.mode": "open"})
    checks = by_name(registry_checks(config, load_plugins(["claude"], entry_points=False)))
    assert checks["tool"].status == "fail"
    assert "tool 'claude' is not available" in checks["tool"].detail


def test_network_settings_the_policy_rejects_fail(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"network.mode": "allowlist"})
    check = by_name(registry_checks(config, load_plugins(entry_points=False)))["network policy"]
    assert check.status == "fail"
    assert "allowlist mode needs at least one entry in allowed_domains" in check.detail


# --- the cci_doctor_checks hook -----------------------------------------------------------------------------------


def test_plugin_checks_come_in_plugin_order_with_the_config(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"defaults.driver": "stub"})
    plugin = DoctorPlugin([ok("stub daemon", "up"), warn("stub disk", "slow", "buy a disk")])
    plugins = load_plugins(entry_points=False, extra=[("stubby", plugin), ("other", OtherPlugin())])
    assert plugin_checks(config, plugins) == [ok("stub daemon", "up"), warn("stub disk", "slow", "buy a disk"),
                                              ok("other", "still checked")]
    assert plugin.configs == [config]


def test_a_plugin_that_raises_costs_one_fail_line_only(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"defaults.driver": "stub"})
    plugins = load_plugins(entry_points=False, extra=[("stubby", DoctorPlugin(error=RuntimeError("oops"))),
                                                      ("other", OtherPlugin())])
    assert plugin_checks(config, plugins) == [
        fail("plugin stubby", "RuntimeError: oops", "this is a bug in plugin 'stubby': please report it"),
        ok("other", "still checked"),
    ]


@pytest.mark.parametrize("returned", ["ok", [("a", "ok", "b")], [Check("a", "great", "b")]])
def test_a_plugin_returning_something_else_than_checks_fails(tmp_path: Path, returned: Any) -> None:
    config = make_config(tmp_path, **{"defaults.driver": "stub"})
    plugins = load_plugins(entry_points=False, extra=[("stubby", DoctorPlugin(returned))])
    [check] = plugin_checks(config, plugins)
    assert check.name == "plugin stubby" and check.status == "fail"
    assert "not a list of Check" in check.detail


def test_the_incus_plugin_stays_silent_for_another_driver(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"defaults.driver": "stub"})
    plugins = load_plugins(entry_points=False, extra=[("stubby", DoctorPlugin([ok("stub daemon", "up")]))])
    assert plugins.manager.get_plugin("incus").cci_doctor_checks is incus_plugin.cci_doctor_checks
    assert plugin_checks(config, plugins) == [ok("stub daemon", "up")]


# --- the command --------------------------------------------------------------------------------------------------


@pytest.fixture
def doctor_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[DoctorPlugin]:
    """Every cci invocation in the test also loads this plugin (and the built-ins, no entry points)."""
    plugin = DoctorPlugin()
    real = load_plugins

    def loader(disabled: Any = (), *, warn: Any = None, **kwargs: Any) -> Any:
        return real(disabled, entry_points=False, extra=[("stubby", plugin)], warn=warn)

    monkeypatch.setattr("cci_core.plugin_manager.load_plugins", loader)
    yield plugin


def doctor(*args: str, workspace: Path, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["--workspace", str(workspace), "doctor", *args],
                                              env={"CCI_DEFAULTS_DRIVER": "stub", "CCI_NETWORK_MODE": "open",
                                                   **(env or {})})


def test_command_exits_0_with_warnings(doctor_plugin: DoctorPlugin, tmp_path: Path) -> None:
    doctor_plugin.checks = [ok("stub daemon", "up"), warn("stub disk", "slow", "buy a disk")]
    result = doctor(workspace=tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 6 + ["warn"]
    assert lines[-1].split(None, 1)[1].split() == ["stub", "disk", "slow", "fix:", "buy", "a", "disk"]
    assert result.stderr == ""


def test_command_exits_1_when_a_check_fails_and_says_so_on_stderr(doctor_plugin: DoctorPlugin,
                                                                    tmp_path: Path) -> None:
    doctor_plugin.checks = [fail("stub daemon", "down", "start it"), ok("stub disk", "fine")]
    result = doctor(workspace=tmp_path)
    assert result.exit_code == 1
    assert "fail  stub daemon     down  fix: start it" in result.stdout.splitlines()
    assert result.stderr == "cci: 1 check failed: stub daemon\n"


def test_command_json(doctor_plugin: DoctorPlugin, tmp_path: Path) -> None:
    doctor_plugin.checks = [fail("stub daemon", "down", "start it")]
    result = doctor("--format", "json", workspace=tmp_path)
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == ["config", "plugins", "driver", "tool", "network policy", "stub daemon"]
    assert rows[-1] == {"name": "stub daemon", "status": "fail", "detail": "down", "fix": "start it"}
    assert all(set(row) == {"name", "status", "detail", "fix"} for row in rows)


def test_command_reports_a_broken_config_instead_of_crashing(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text("[incus]\nclaude_uid = 'many'\n")
    result = doctor(workspace=tmp_path)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("fail  config   ") and "incus.claude_uid" in lines[0]
    assert lines[1].startswith("warn  skipped  not checked because the config did not load")
    assert len(lines) == 2
    assert "Traceback" not in result.stdout + result.stderr


def test_an_untrusted_workspace_config_is_its_own_fail_line_and_trusting_it_clears_it(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text("[defaults]\npersistent = true\n")
    result = doctor(workspace=tmp_path)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[1].startswith("fail  workspace trust  ") and "is not trusted" in lines[1]
    assert "cci config trust" in lines[1]
    assert lines[2].startswith("warn  skipped") and "untrusted workspace config" in lines[2] and len(lines) == 3

    assert CliRunner().invoke(cli, ["--workspace", str(tmp_path), "config", "trust"]).exit_code == 0
    rows = json.loads(doctor("--format", "json", workspace=tmp_path).stdout)
    assert [(row["name"], row["status"]) for row in rows[:3]] == [("config", "ok"), ("workspace trust", "ok"),
                                                                   ("plugins", "ok")]


def test_command_with_an_unknown_driver_fails_without_backend_checks(tmp_path: Path) -> None:
    result = doctor(workspace=tmp_path, env={"CCI_DEFAULTS_DRIVER": "nope"})
    assert result.exit_code == 1
    names = [row["name"] for row in json.loads(doctor("--format", "json", workspace=tmp_path,
                                                      env={"CCI_DEFAULTS_DRIVER": "nope"}).stdout)]
    assert names == ["config", "plugins", "driver", "tool", "network policy"]
    assert "fail  driver" in result.stdout


# --- Incus: /etc/subuid and /etc/subgid ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "host_id", "expected"), [
    ("root:1001:1\n", 1001, True),
    ("root:1000000:1000000000\nroot:1001:1\n", 1001, True),
    ("root:1000:10\n", 1009, True),
    ("root:1000:10\n", 1010, False),       # the range ends before start + count
    ("root:1000000:1000000000\n", 1001, False),
    ("ccitest:1001:1\n", 1001, False),     # delegated to someone else than root
    ("0:1001:1\n", 1001, True),            # by uid
    ("# root:1001:1\nroot:x:1\nroot:1001\n\n", 1001, False),
    ("", 1001, False),
])
def test_delegated(tmp_path: Path, text: str, host_id: int, expected: bool) -> None:
    path = tmp_path / "subuid"
    path.write_text(text)
    assert delegated(path, host_id) is expected


def test_missing_subid_file_delegates_nothing(tmp_path: Path) -> None:
    assert delegated(tmp_path / "absent", 1001) is False


def subid_files(tmp_path: Path, subuid: str, subgid: str) -> dict[str, Path]:
    (tmp_path / "subuid").write_text(subuid)
    (tmp_path / "subgid").write_text(subgid)
    return {"subuid": tmp_path / "subuid", "subgid": tmp_path / "subgid"}


def test_uid_mapping_fails_with_the_lines_to_add(tmp_path: Path) -> None:
    files = subid_files(tmp_path, "root:1000000:1000000000\n", "root:1000000:1000000000\n")
    check = uid_mapping_check(IncusSettings(), uid=1001, gid=1002, **files)
    assert check.status == "fail"
    assert "cci maps your uid 1001 onto the container user (1000) with raw.idmap" in check.detail
    assert check.fix == (f"run 'cci setup' (or add 'root:1001:1' to {files['subuid']} and 'root:1002:1' to "
                         f"{files['subgid']}, then restart Incus ('sudo systemctl restart incus'))")


def test_uid_mapping_names_only_what_is_missing(tmp_path: Path) -> None:
    files = subid_files(tmp_path, "root:1001:1\n", "")
    check = uid_mapping_check(IncusSettings(), uid=1001, gid=1001, **files)
    assert check.status == "fail"
    assert check.fix.startswith(f"run 'cci setup' (or add 'root:1001:1' to {files['subgid']}, then restart Incus")


def test_uid_mapping_ok_when_delegated(tmp_path: Path) -> None:
    files = subid_files(tmp_path, "root:1001:1\n", "root:1000:5\n")
    check = uid_mapping_check(IncusSettings(), uid=1001, gid=1003, **files)
    assert check.status == "ok" and "raw.idmap" in check.detail


def test_uid_mapping_is_needed_for_everyone_but_root_even_the_container_uid(tmp_path: Path) -> None:
    """A shifted mount would let root in the container own files on the host (setuid ones too)."""
    files = subid_files(tmp_path, "", "")
    assert uid_mapping_check(IncusSettings(), uid=0, gid=0, **files).status == "ok"
    same = uid_mapping_check(IncusSettings(), uid=1000, gid=1000, **files)
    assert same.status == "fail" and "root in the container cannot own files on the host" in same.detail


def test_uid_mapping_of_a_remote_server_is_only_a_warning(tmp_path: Path) -> None:
    files = subid_files(tmp_path, "", "")
    check = uid_mapping_check(IncusSettings(url="https://incus.example:8443"), uid=1001, gid=1001, **files)
    assert check.status == "warn" and check.fix.startswith("on the server: ")


# --- Incus: storage, network, image against a fake server ---------------------------------------------------------


class FakeServer(_Server):
    """Answers ``read`` from a dict keyed by the joined path; a missing key is Incus's 404."""

    def __init__(self, resources: dict[str, Any], project: str = "cci-test") -> None:
        super().__init__(SimpleNamespace(section={"incus": IncusSettings(project=project)}.get), {})  # type: ignore[arg-type]
        self.resources = resources

    def read(self, action: str, *path: str) -> Any:
        key = "/".join(path)
        if key not in self.resources:
            raise NotFoundError(f"{action}: not found")
        return self.resources[key]


ROOT = {"type": "disk", "path": "/", "pool": "fast"}
NIC = {"type": "nic", "network": "br0", "name": "eth0"}


def server(devices: dict[str, Any], **resources: Any) -> FakeServer:
    return FakeServer({"profiles/default": {"devices": devices}, **resources})


@pytest.mark.parametrize(("mode", "extensions", "status", "detail"), [
    ("open", [], "ok", "not needed: the network policy is open"),
    ("restricted", ["network_acl"], "ok", "supported: 'restricted' gets a bridge of its own (NAT on, subnets picked "
                                          "by Incus; see 'cci network list')"),
    ("allowlist", ["storage"], "fail", "this Incus has no network ACLs (API extension network_acl): policy "
                                       "'allowlist' cannot be enforced"),
])
def test_network_acls_are_needed_unless_open(mode: str, extensions: list[str], status: str, detail: str) -> None:
    from cci_builtin_plugins.incus.doctor import acl_check
    from cci_core.config.schema import NetworkConfig

    fake = server({})
    fake.__dict__["host_info"] = {"api_extensions": extensions}
    check = acl_check(fake, SimpleNamespace(network=NetworkConfig(mode=mode), section={"incus": IncusSettings()}.get))  # type: ignore[arg-type]
    assert (check.status, check.detail) == (status, detail)


def test_dir_pool_warns_and_suggests_btrfs_or_zfs() -> None:
    check = pool_driver_check("default", "dir")
    assert check.status == "warn"
    assert "copies the whole image" in check.detail
    assert "btrfs or zfs" in check.fix


@pytest.mark.parametrize("driver", ["btrfs", "zfs", "lvm", "ceph"])
def test_copy_on_write_pools_are_ok(driver: str) -> None:
    assert pool_driver_check("default", driver) == ok("storage", f"pool default ({driver})")


def test_root_disk_is_the_disk_at_slash() -> None:
    devices = {"data": {"type": "disk", "path": "/data", "pool": "x"}, "root": ROOT, "eth0": NIC}
    assert root_disk(devices) == ("root", ROOT)
    assert root_disk({"data": devices["data"], "eth0": NIC}) is None


def test_storage_reads_the_pool_of_the_root_disk() -> None:
    fake = server({"root": ROOT}, **{"storage-pools/fast": {"driver": "dir"}})
    assert storage_check(fake).status == "warn"
    fake = server({"root": ROOT}, **{"storage-pools/fast": {"driver": "btrfs"}})
    assert storage_check(fake) == ok("storage", "pool fast (btrfs)")


def test_no_root_disk_fails_with_the_command_to_add_one() -> None:
    fake = server({"eth0": NIC}, **{"storage-pools": ["/1.0/storage-pools/zpool", "/1.0/storage-pools/bpool"]})
    check = storage_check(fake)
    assert check.status == "fail" and "no root disk" in check.detail
    assert check.fix == "incus profile device add default root disk path=/ pool=bpool --project cci-test"


def test_no_root_disk_and_no_pool_says_to_create_a_pool() -> None:
    check = storage_check(FakeServer({"profiles/default": {"devices": {}}, "storage-pools": []}, project="default"))
    assert check.fix == ("incus storage create default btrfs, then incus profile device add default root disk "
                         "path=/ pool=default")


def test_root_disk_on_a_missing_pool_fails() -> None:
    check = storage_check(server({"root": ROOT}))
    assert check.status == "fail" and "'fast', which does not exist" in check.detail


def test_network_ok_names_each_nic_and_its_network() -> None:
    fake = server({"root": ROOT, "eth0": NIC}, **{"networks/br0": {"type": "bridge"}})
    assert network_check(fake) == ok("network", "eth0 on br0 (bridge)")


def test_network_of_a_nic_must_exist() -> None:
    check = network_check(server({"eth0": NIC}))
    assert check.status == "fail" and "uses network 'br0', which does not exist" in check.detail
    assert "incus network create br0" in check.fix


def test_no_nic_fails_with_the_command_to_add_one() -> None:
    check = network_check(server({"root": ROOT}))
    assert check.status == "fail" and "no network device" in check.detail
    assert "incus profile device add default eth0 nic network=incusbr0 name=eth0 --project cci-test" in check.fix


def test_image_alias_must_exist() -> None:
    fake = FakeServer({"images/aliases/cci": {"target": "0123456789abcdef"},
                       "images/0123456789abcdef": {"properties": {"cci.tool.claude.version": "2.1.332"}}})
    assert image_check(fake, "cci") == ok("image", "cci (0123456789ab) with claude 2.1.332")
    check = image_check(fake, "missing")
    assert check == fail("image", "image 'missing' not found in project cci-test",
                         "run 'cci setup' (it builds the image) or 'cci build', or choose another with --image or "
                         "[defaults] image")


def test_the_proxy_image_is_checked_and_needed_only_by_the_proxy_mode() -> None:
    fake = FakeServer({"images/aliases/cci-proxy": {"target": "fedcba9876543210"}})
    assert proxy_image_check(fake, "cci-proxy", "restricted") == ok("proxy image", "cci-proxy (fedcba987654)")
    missing = proxy_image_check(fake, "my-proxy", "restricted")
    assert missing.status == "warn" and "'my-proxy' not found" in missing.detail
    assert "cci build proxy --alias my-proxy" in missing.fix
    assert proxy_image_check(fake, "my-proxy", "proxy").status == "fail"


def test_a_failing_read_fails_only_its_own_check() -> None:
    class Broken(FakeServer):
        def read(self, action: str, *path: str) -> Any:
            raise BackendError(f"{action}: lost the connection to Incus")

    checks = [guarded("storage", storage_check, Broken({})), guarded("network", network_check, Broken({}))]
    assert [check.status for check in checks] == ["fail", "fail"]
    assert checks[0].detail == "reading the default profile: lost the connection to Incus"


# --- Incus: socket --------------------------------------------------------------------------------------------------


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "incus.socket"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    yield path
    listener.close()


def test_installed_finds_the_configured_socket(tmp_path: Path, unix_socket: Path) -> None:
    config = make_config(tmp_path, **{"incus.socket": str(unix_socket)})
    check = installed_check(config, {})
    assert check.status == "ok" and check.detail.startswith(f"socket {unix_socket} ([incus] socket, set by")


def test_installed_fails_for_a_missing_or_non_socket_path(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"incus.socket": str(tmp_path / "absent")})
    check = installed_check(config, {})
    assert check.status == "fail" and check.detail.startswith(f"no Incus socket at {tmp_path / 'absent'}")
    assert "correct or unset [incus] socket" in check.fix and "systemctl start incus" in check.fix
    (tmp_path / "file").write_text("")
    check = installed_check(make_config(tmp_path), {"INCUS_SOCKET": str(tmp_path / "file")})
    assert check.status == "fail" and check.detail == f"{tmp_path / 'file'} is not a socket (INCUS_SOCKET, set by the environment)"


def test_a_remote_url_needs_no_socket(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"incus.url": "https://incus.example:8443"})
    assert installed_check(config, {}) == ok("incus installed", "remote Incus at https://incus.example:8443 ([incus] url)")


def test_access_reason_says_how_the_socket_is_usable(tmp_path: Path) -> None:
    path = tmp_path / "socket"
    path.write_text("")
    info = path.stat()
    assert access_reason(path, 0, set()).startswith("running as root")
    assert access_reason(path, info.st_uid + 1 or 1, {info.st_gid}).startswith("you are in group ")
    assert access_reason(path, info.st_uid + 1 or 1, set()) == f"{path} is open to every user"
    if info.st_uid:
        assert access_reason(path, info.st_uid, set()) == f"you own {path}"


def test_unreachable_incus_skips_the_checks_that_need_it(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"incus.socket": str(tmp_path / "absent")})
    files = subid_files(tmp_path, "", "")
    checks = incus_checks(config, {}, uid=0, gid=0, **files)
    assert [(check.name, check.status) for check in checks] == [
        ("incus installed", "fail"), ("incus reachable", "fail"), ("uid mapping", "ok"), ("skipped", "warn")]
    assert checks[1].detail == f"Incus is not running: no socket at {tmp_path / 'absent'}"
    assert checks[3].detail == ("not checked because Incus is not reachable: incus group, incus project, storage, "
                                "network, network acls, policy subnets, idmapped mounts, image, proxy image")
