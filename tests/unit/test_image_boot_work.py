"""The cci image boots light: Docker starts on first use of its socket, and the work systemd does at a first boot
(because /usr is newer than /etc/.updated) is done once at build time, on both build paths."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cci_builtin_plugins.images import contents
from tests.unit.test_image_host_build import FakeHost, host, make  # noqa: F401  (host: the fixture)


def test_docker_is_socket_activated_not_started_at_boot() -> None:
    assert "docker.socket" in contents.ENABLED_UNITS
    assert {"docker.service", "containerd.service"} <= set(contents.DISABLED_UNITS)
    assert not set(contents.ENABLED_UNITS) & set(contents.DISABLED_UNITS)


def test_the_server_script_disables_docker_at_boot_and_does_the_first_boot_work_last() -> None:
    script = contents.server_script()
    assert "systemctl enable docker.socket" in script
    assert "systemctl disable docker.service containerd.service" in script
    clean_up = script.index("apt-get clean")
    for command in contents.FIRST_BOOT_WORK:
        assert script.index(f"\n{command}\n") > clean_up, command
    assert script.rstrip().endswith(contents.FIRST_BOOT_WORK[-1])


def test_the_recipe_names_the_disabled_units_and_the_first_boot_work() -> None:
    definition = contents.definition().splitlines()
    assert "docker.service" in definition and "docker.socket" in definition
    assert set(contents.FIRST_BOOT_WORK) <= set(definition)


def test_the_host_path_does_the_first_boot_work_in_the_finished_tree(host: FakeHost, tmp_path: Path,  # noqa: F811
                                                                   monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: dict[str, bool] = {}
    record = host.run

    def run(argv: Sequence[str], output: Callable[[bytes], None], what: str,
            env: Mapping[str, str] | None = None) -> None:
        if what == contents.FIRST_BOOT_WORK[-1]:  # the tool's files are in place by then: nothing changes /usr after
            rootfs = Path(argv[argv.index("chroot") + 1])
            seen["tool in place"] = (rootfs / "usr/local/bin/faketool").is_file()
        record(argv, output, what, env)

    from cci_builtin_plugins.images import host_build

    monkeypatch.setattr(host_build, "run_host_command", run)
    builder, driver, request = make(tmp_path)
    builder.build(driver, request, lambda chunk: None)
    assert "systemctl disable" in host.steps
    assert host.steps[-1 - len(contents.FIRST_BOOT_WORK):] == [*contents.FIRST_BOOT_WORK, "tar"]
    assert seen == {"tool in place": True}
