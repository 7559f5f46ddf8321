"""``cci network``: the networks that enforce network policies, their rules and resolved addresses."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from cci_core.cli.state import get_state, warn
from cci_core.cli.table import print_table
from cci_core.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from cci_core.driver import PolicyNetwork
    from cci_core.network_policy import NetworkPlan

_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)


@click.group()
def network() -> None:
    """Network policies: show the rules in force, refresh allowlist addresses, remove unused networks."""


@network.command("list")
@_FORMAT
@click.pass_context
def list_networks(ctx: click.Context, fmt: str) -> None:
    """List the networks cci made for network policies, and the containers on each."""
    networks = get_state(ctx).driver.policy_networks()
    if fmt == "json":
        _echo_json([_document(item.plan, item) for item in networks])
        return
    print_table(["NAME", "POLICY", "SUBNET", "REFRESHED", "USED BY"],
                [[item.name, item.plan.policy, item.subnet or "-", _when(item.refreshed_at),
                  ", ".join(item.used_by) or "-"] for item in networks],
                empty="no policy networks (cci makes them when a session starts)")


@network.command()
@click.argument("name", required=False)
@_FORMAT
@click.pass_context
def show(ctx: click.Context, name: str | None, fmt: str) -> None:
    """Print the rules in force for NAME (a container or a policy network), or the ones this workspace's
    configuration would apply (made now: names are resolved, nothing is created)."""
    state = get_state(ctx)
    if name is None:
        from cci_core.networking import policy_for

        settings = state.config.network
        plan = policy_for(state.config, state.plugins.registries).plan(settings)
        found: PolicyNetwork | None = None
        if plan is not None:
            found = next((item for item in state.driver.policy_networks()
                          if (item.plan.policy, item.plan.identity) == (plan.policy, plan.identity)), None)
        _show(plan, found, settings.mode, fmt)
        return
    networks = state.driver.policy_networks()
    found = next((item for item in networks if name in (item.name, *item.used_by)), None)
    if found is None:
        from cci_core.session_record import SessionRecord

        record = SessionRecord.from_labels(state.driver.get(name).labels())  # a NotFoundError names what is missing
        _show(None, None, record.network or "open", fmt)
        return
    _show(found.plan, found, found.plan.policy, fmt)


@network.command()
@click.argument("names", nargs=-1)
@click.option("--due", is_flag=True, help="Only networks in use whose refresh interval has passed (for cron).")
@click.pass_context
def refresh(ctx: click.Context, names: Sequence[str], due: bool) -> None:
    """Resolve the allowlisted names of NAMES (default: every policy network made from names) again, and
    apply the addresses. A name that does not resolve keeps its last good addresses."""
    from cci_core.networking import refresh as refresh_networks

    state = get_state(ctx)
    if names and due:
        raise UsageError("give network names or --due, not both")
    known = {item.name: item for item in state.driver.policy_networks()}
    for name in names:
        if name not in known:
            raise NotFoundError(f"no policy network named {name!r}", hint="see 'cci network list'")
    wanted = list(names) or ([] if due else [name for name, item in known.items() if item.plan.addresses])
    if not wanted and not due:
        click.echo("no policy network is made from names: nothing to refresh")
        return
    results = refresh_networks(state.driver, state.plugins.registries, names=wanted)
    for result in results:
        for note in result.notes:
            warn(f"{result.network}: {note}")
        if not result.changes:
            click.echo(f"{result.network}: addresses unchanged")
        for host, (old, new) in sorted(result.changes.items()):
            click.echo(f"{result.network}: {host}: {', '.join(old) or '-'} -> {', '.join(new) or '-'}")
    if due and not results:
        click.echo("no network was due")


@network.command()
@click.argument("names", nargs=-1)
@click.option("--unused", is_flag=True, help="Every policy network no container uses.")
@click.pass_context
def delete(ctx: click.Context, names: Sequence[str], unused: bool) -> None:
    """Delete policy networks NAMES (or --unused ones); cci makes them again when a session needs them."""
    driver = get_state(ctx).driver
    if bool(names) == unused:
        raise UsageError("give network names or --unused", hint="see 'cci network list'")
    known = {item.name: item for item in driver.policy_networks()}
    for name in names:
        if name not in known:
            raise NotFoundError(f"no policy network named {name!r}", hint="see 'cci network list'")
        if known[name].used_by:
            raise UsageError(f"network {name} is used by {', '.join(known[name].used_by)}",
                             hint="end those sessions first ('cci shutdown')")
    for name in names or [name for name, item in known.items() if not item.used_by]:
        driver.delete_network(name)
        click.echo(f"deleted {name}")


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def _document(plan: NetworkPlan | None, found: PolicyNetwork | None, policy: str = "") -> dict[str, Any]:
    """The JSON form of ``cci network show`` (documented in docs/cli.md)."""
    if plan is None:
        return {"policy": policy, "network": None, "restricted": False}
    return {
        "policy": plan.policy,
        "network": found.name if found else None,
        "restricted": True,
        "subnet": found.subnet if found else None,
        "used_by": list(found.used_by) if found else [],
        "default": plan.default,
        "rules": [{"action": rule.action, "destinations": list(rule.destinations), "description": rule.description}
                  for rule in plan.rules],
        "addresses": {name: list(found_) for name, found_ in plan.addresses.items()},
        "refresh_minutes": plan.refresh_minutes,
        "refreshed_at": found.refreshed_at if found else None,
        "notes": list(plan.notes),
    }


def _echo_json(document: Any) -> None:
    import json

    click.echo(json.dumps(document, indent=2))


def _show(plan: NetworkPlan | None, found: PolicyNetwork | None, policy: str, fmt: str) -> None:
    if fmt == "json":
        _echo_json(_document(plan, found, policy))
        return
    if plan is None:
        click.echo(f"policy   {policy}: no restrictions (the container uses its profile's network)")
        return
    click.echo(f"policy   {plan.policy}")
    if found is None:
        click.echo("network  not made yet (the next session with this policy makes it)")
    else:
        click.echo(f"network  {found.name} ({found.subnet or 'no IPv4'}), used by {', '.join(found.used_by) or '-'}")
    click.echo(f"default  {plan.default} (traffic no rule matches; DHCP and DNS to the network itself pass)")
    if plan.refresh_minutes:
        last = f"; last {_when(found.refreshed_at)}" if found else ""
        click.echo(f"refresh  every {plan.refresh_minutes} min while in use{last}")
    click.echo("rules (egress; rejections win over allows):")
    print_table(["  ACTION", "DESTINATIONS", "WHY"],
                [[f"  {rule.action}", " ".join(rule.destinations), rule.description] for rule in plan.rules])
    from cci_core.network_policy import BROADCAST_RULE

    if not any(rule.description == BROADCAST_RULE for rule in plan.rules):  # a plan not enforced yet
        host = ", and every address of the host itself" if plan.block_host else ""
        click.echo(f"  and the driver rejects multicast and broadcast{host} (but DHCP and DNS of the network)")
    if plan.addresses:
        click.echo("addresses:")
        print_table(["  NAME", "IPV4"],
                    [[f"  {name}", " ".join(found_) or "(none: unreachable)"] for name, found_ in plan.addresses.items()])
    for note in plan.notes:
        warn(note)
