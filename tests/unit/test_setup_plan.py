"""The plan of ``cci setup`` from made-up host facts: each distribution, each machine state, the bad input."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from cci_core.errors import CciError, UsageError
from cci_builtin_plugins.setup import facts as host
from cci_builtin_plugins.setup.facts import Daemon, Distro, HostFacts, IncusState, Network, Pool, User
from cci_builtin_plugins.setup.plan import DONE, MANUAL, PENDING, Options, make_plan

DEBIAN_12 = Distro("debian", "12", "bookworm", "Debian GNU/Linux 12 (bookworm)")
DEBIAN_13 = Distro("debian", "13", "trixie", "Debian GNU/Linux 13 (trixie)")
UBUNTU_24 = Distro("ubuntu", "24.04", "noble", "Ubuntu 24.04.1 LTS")
FEDORA = Distro("fedora", "41", "", "Fedora Linux 41")
OPTIONS = Options(config_file=Path("/etc/cci/config.toml"), image="cci", cci=("/usr/bin/cci",))
ALICE = User("alice", 1001, 1001, in_group=False)
ROUTES = (ipaddress.IPv4Network("192.0.2.0/24"), ipaddress.IPv4Network("10.150.0.0/16"))
PREPARED = IncusState(
    pools={"cci": Pool("cci", "btrfs", True)},
    devices={"root": {"type": "disk", "path": "/", "pool": "cci"},
             "eth0": {"type": "nic", "network": "incusbr0", "name": "eth0"}},
    networks={"incusbr0": Network("incusbr0", "bridge", True, ipaddress.IPv4Interface("10.151.0.1/24"), True)},
    images=frozenset({"cci", "cci-proxy"}),
)
EMPTY = IncusState(pools={}, devices={}, networks={}, images=frozenset())


def fresh(distro: Distro = DEBIAN_12, **changes: object) -> HostFacts:
    """A machine with nothing done: no Incus, no group, no delegation, no config file."""
    facts = HostFacts(distro=distro, mirror="http://mirror.example/debian", signed_by="/usr/share/keyrings/k.gpg",
                      backports_file=False, incus_installed=False, btrfs_tools=False, systemd=False,
                      daemon=Daemon(False), incus=None, user=ALICE, subids_delegated=False, subids_changed=100.0,
                      subids_unterminated=(False, False),
                      routes=ROUTES, config_text=None, config_readable=True, config_dir=False, config_writable=False, is_root=True,
                      sudo=True)
    return facts._replace(**changes)


def prepared(**changes: object) -> HostFacts:
    """A machine where everything is done."""
    done = dict(incus_installed=True, btrfs_tools=True, daemon=Daemon(True, 42, 200.0, host.SETUP), incus=PREPARED,
                user=ALICE._replace(in_group=True), subids_delegated=True,
                config_text='[incus]\nnetwork_subnets = "10.152.0.0/16"\n', config_dir=True)
    return fresh(**{**done, **changes})


def states(plan) -> dict[str, str]:
    return {step.title: step.state for step in plan.steps}


def commands(step) -> list[str]:
    return [action.shell() for action in step.actions]


def test_fresh_debian_12_installs_from_backports_with_the_hosts_mirror_and_keyring() -> None:
    plan = make_plan(fresh(), OPTIONS)
    install = plan.steps[0]
    assert install.state == PENDING
    source = install.actions[0]
    assert source.argv == ("tee", str(host.BACKPORTS_FILE))
    assert "URIs: http://mirror.example/debian\nSuites: bookworm-backports\n" in source.stdin
    assert "Signed-By: /usr/share/keyrings/k.gpg\n" in source.stdin
    assert commands(install)[1:] == [
        "apt-get update -q",
        "env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t bookworm-backports "
        "incus-base btrfs-progs"]


def test_a_backports_source_made_before_is_not_written_again() -> None:
    install = make_plan(fresh(backports_file=True), OPTIONS).steps[0]
    assert [action.argv[0] for action in install.actions] == ["apt-get", "env"]


@pytest.mark.parametrize("distro", [DEBIAN_13, UBUNTU_24])
def test_debian_13_and_ubuntu_24_04_install_from_the_release(distro: Distro) -> None:
    install = make_plan(fresh(distro), OPTIONS).steps[0]
    assert commands(install) == [
        "apt-get update -q",
        "env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends incus-base btrfs-progs"]


def test_an_unknown_distribution_without_incus_is_one_clear_error() -> None:
    with pytest.raises(CciError) as error:
        make_plan(fresh(FEDORA), OPTIONS)
    assert error.value.exit_code == 1
    assert error.value.message.startswith("no Incus package known for Fedora Linux 41; install Incus yourself")
    assert "then run cci setup again" in error.value.message


def test_an_unknown_distribution_with_incus_installed_is_fine() -> None:
    plan = make_plan(prepared(distro=FEDORA), OPTIONS)
    assert plan.pending == ()


def test_fresh_machine_plans_every_step_in_order_with_a_fresh_incus() -> None:
    plan = make_plan(fresh(), OPTIONS)
    assert list(states(plan).items()) == [
        ("install Incus", PENDING), ("add alice to incus-admin", PENDING), ("delegate uid 1001 and gid 1001 to root", PENDING),
        ("start Incus", PENDING), ("restart Incus for the delegated ids", DONE), ("storage pool", PENDING),
        ("default network", PENDING), ("IPv4 range for cci's policy networks", PENDING), ("image cci", PENDING),
        ("proxy image cci-proxy", PENDING)]
    group, subids, start, _, pool, network, subnets, image, proxy_image = plan.steps[1:]
    assert commands(group) == ["usermod -aG incus-admin alice"]
    assert "newgrp incus-admin" in group.note
    assert commands(subids) == ["echo root:1001:1 | tee -a /etc/subuid", "echo root:1001:1 | tee -a /etc/subgid"]
    assert commands(start)[1] == ("sh -c 'setsid /usr/libexec/incus/incusd --group incus-admin "
                                  ">>/var/log/cci-setup-incusd.log 2>&1 </dev/null & echo $! >/run/cci-setup/incusd.pid'")
    assert commands(start)[2] == "incus admin waitready --timeout=60"
    assert start.refresh
    assert commands(pool) == [
        "incus storage create cci btrfs size=20GiB user.cci.setup=true --description 'made by cci setup'",
        "incus profile device add default root disk path=/ pool=cci"]
    # 10.150.0.0/16 is routed here: the policy range is the next free /16, the bridge a /24 outside it
    assert commands(subnets)[0] == "mkdir -p /etc/cci"
    assert 'network_subnets = "10.151.0.0/16"' in subnets.actions[1].stdin
    assert commands(network) == [
        "incus network create incusbr0 ipv4.address=10.152.0.1/24 ipv4.nat=true ipv6.address=none "
        "user.cci.setup=true --description 'made by cci setup'",
        "incus profile device add default eth0 nic network=incusbr0 name=eth0"]
    assert commands(image) == ["/usr/bin/cci build"]
    assert commands(proxy_image) == ["/usr/bin/cci build proxy"]


def test_systemd_starts_and_restarts_incus_through_systemd() -> None:
    start = make_plan(fresh(systemd=True), OPTIONS).steps[3]
    assert commands(start)[0] == "systemctl enable --now incus.service"
    facts = prepared(systemd=True, subids_delegated=False, daemon=Daemon(True, 42, 200.0, host.SYSTEMD))
    restart = make_plan(facts, OPTIONS).steps[4]
    assert (restart.state, commands(restart)) == (PENDING, ["systemctl restart incus.service"])


def test_partly_done_plans_only_what_is_missing() -> None:
    facts = prepared(user=ALICE, incus=PREPARED._replace(images=frozenset()), config_text="# mine\n")
    plan = make_plan(facts, OPTIONS)
    assert [step.title for step in plan.pending] == [
        "add alice to incus-admin", "IPv4 range for cci's policy networks", "image cci",
        "proxy image cci-proxy"]
    assert plan.pending[1].actions[-1].stdin.startswith("# mine\n")


def test_everything_done_means_nothing_to_do() -> None:
    plan = make_plan(prepared(), OPTIONS)
    assert plan.pending == ()
    assert plan.warnings == ()


def test_no_image_skips_the_build() -> None:
    plan = make_plan(prepared(incus=PREPARED._replace(images=frozenset())), OPTIONS._replace(build_image=False))
    assert plan.pending == ()


def test_ids_delegated_after_incusd_started_need_a_restart() -> None:
    facts = prepared(subids_changed=300.0)  # changed after the daemon started (200)
    assert make_plan(facts, OPTIONS).steps[4].state == PENDING
    assert make_plan(prepared(subids_changed=150.0), OPTIONS).steps[4].state == DONE


def test_a_daemon_setup_did_not_start_is_not_restarted_but_the_command_is_said() -> None:
    facts = prepared(subids_delegated=False, daemon=Daemon(True, 42, 200.0, host.OTHER))
    restart = make_plan(facts, OPTIONS).steps[4]
    assert restart.state == MANUAL
    assert restart.actions == ()
    assert "'incus admin shutdown && /usr/bin/cci setup'" in restart.detail
    restart = make_plan(facts._replace(is_root=False), OPTIONS).steps[4]
    assert "'sudo incus admin shutdown && sudo /usr/bin/cci setup'" in restart.detail


def test_root_needs_no_group_and_no_delegation() -> None:
    plan = make_plan(prepared(user=User("root", 0, 0, False), subids_delegated=False), OPTIONS)
    assert plan.pending == ()


def test_an_existing_pool_of_the_default_profile_is_reused_and_a_dir_pool_is_warned_about() -> None:
    incus = PREPARED._replace(pools={"default": Pool("default", "dir", False)},
                              devices={**PREPARED.devices, "root": {"type": "disk", "path": "/", "pool": "default"}})
    plan = make_plan(prepared(incus=incus), OPTIONS)
    assert plan.pending == ()
    assert len(plan.warnings) == 1
    assert "3.1 s on dir against 0.5 s on btrfs" in plan.warnings[0]
    assert "every launch copies the whole root filesystem" in plan.warnings[0]


def test_a_pool_name_taken_by_something_else_stops_setup() -> None:
    incus = EMPTY._replace(pools={"cci": Pool("cci", "zfs", False)})
    with pytest.raises(UsageError) as error:
        make_plan(prepared(incus=incus), OPTIONS)
    assert error.value.message == "storage pool 'cci' exists and was not made by cci setup, which never changes it"
    assert error.value.hint == "choose another name with --pool NAME"


def test_a_pool_setup_made_before_is_used_without_creating_it_again() -> None:
    incus = EMPTY._replace(pools={"cci": Pool("cci", "btrfs", True)})
    pool = make_plan(prepared(incus=incus), OPTIONS).steps[5]
    assert commands(pool) == ["incus profile device add default root disk path=/ pool=cci"]


def test_a_bridge_name_taken_by_something_else_stops_setup() -> None:
    incus = PREPARED._replace(devices={"root": PREPARED.devices["root"]},
                              networks={"incusbr0": Network("incusbr0", "bridge", True, None, False)})
    with pytest.raises(UsageError) as error:
        make_plan(prepared(incus=incus), OPTIONS)
    assert error.value.message == "network 'incusbr0' exists and was not made by cci setup, which never changes it"
    assert error.value.hint == "choose another name with --bridge NAME"


def test_a_recorded_range_is_kept() -> None:
    step = make_plan(prepared(config_text='[incus]\nnetwork_subnets = "auto"\n'), OPTIONS).steps[7]
    assert step.state == DONE


def test_incus_unreadable_for_this_user_leaves_its_steps_to_root() -> None:
    plan = make_plan(prepared(incus=None), OPTIONS)
    assert [step.title for step in plan.pending] == ["storage pool", "default network", "image cci", "proxy image cci-proxy"]
    assert all(step.root and not step.actions for step in plan.pending)


def test_a_config_file_the_user_may_write_needs_no_root() -> None:
    step = make_plan(prepared(config_text=None, config_writable=True), OPTIONS).steps[7]
    assert (step.state, step.root) == (PENDING, False)


def test_profile_devices_go_to_the_configured_projects_default_profile() -> None:
    plan = make_plan(prepared(incus=EMPTY._replace(images=frozenset({"cci"}))), OPTIONS._replace(project="work"))
    pool, network = plan.steps[5], plan.steps[6]
    assert commands(pool)[-1] == "incus profile device add default root disk path=/ pool=cci --project work"
    assert commands(network)[-1] == "incus profile device add default eth0 nic network=incusbr0 name=eth0 --project work"


def test_no_restart_makes_even_a_systemd_restart_a_command_to_run() -> None:
    facts = prepared(subids_delegated=False, daemon=Daemon(True, 42, 200.0, host.SYSTEMD))
    restart = make_plan(facts, OPTIONS._replace(restart=False)).steps[4]
    assert restart.state == MANUAL
    assert "is not restarted (--no-restart)" in restart.detail


def test_a_config_file_this_user_cannot_read_is_left_to_root() -> None:
    step = make_plan(prepared(config_text=None, config_readable=False), OPTIONS).steps[7]
    assert (step.state, step.root, step.actions) == (PENDING, True, ())


def test_an_image_of_another_name_is_built_under_that_alias() -> None:
    plan = make_plan(prepared(incus=PREPARED._replace(images=frozenset())), OPTIONS._replace(image="cci-rust"))
    assert commands(plan.steps[8]) == ["/usr/bin/cci build --alias cci-rust"]
    assert plan.steps[8].actions[0].own  # cci itself: its error line says what failed


def test_a_subid_file_without_a_final_newline_gets_one_before_the_new_line() -> None:
    subids = make_plan(fresh(subids_unterminated=(True, False)), OPTIONS).steps[2]
    assert [action.stdin for action in subids.actions] == ["\nroot:1001:1\n", "root:1001:1\n"]
