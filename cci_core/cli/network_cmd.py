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
    from cci_core.network_policy import NetworkPlan, RequestRecord

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
    print_table(["NAME", "POLICY", "SUBNET", "REFRESHED", "PROXY", "USED BY"],
                [[item.name, item.plan.policy, item.subnet or "-", _when(item.refreshed_at), _proxy(item),
                  ", ".join(item.used_by) or "-"] for item in networks],
                empty="no policy networks (cci makes them when a session starts)")


def _proxy(item: PolicyNetwork) -> str:
    """The PROXY column: the proxy container and whether it runs, or ``-``."""
    if not item.proxy:
        return "-" if item.plan.proxy is None else "(not made)"
    return f"{item.proxy} ({item.proxy_status or 'unknown'})"


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
@click.argument("name", required=False)
@click.option("--follow", "-f", is_flag=True, help="Then print each new request as it comes, until Ctrl+C.")
@click.option("--denied", is_flag=True, help="Only the requests the proxy refused.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one object a line, with every field of each request.")
@click.pass_context
def log(ctx: click.Context, name: str | None, follow: bool, denied: bool, fmt: str) -> None:
    """Print the requests the proxy of NAME (a container or a proxy network; default: the one this workspace's
    configuration uses) saw: time, ALLOWED or DENIED, method, host:port, status, the deciding rule, bytes, ms."""
    state = get_state(ctx)
    network_name = _proxy_network(state, name)
    for record in state.driver.network_log(network_name, follow=follow):
        if denied and record.allowed:
            continue
        click.echo(_record_json(record) if fmt == "json" else _record_line(record))


def _proxy_network(state: Any, name: str | None) -> str:
    """The network whose log ``cci network log NAME`` reads: NAME's, or this workspace's plan's."""
    networks = state.driver.policy_networks()
    if name is not None:
        found = next((item for item in networks if name in (item.name, *item.used_by)), None)
        if found is None:
            state.driver.get(name)  # a NotFoundError names what is missing
            raise NotFoundError(f"{name} is not behind a proxy (only the proxy policy logs requests)",
                                hint="see 'cci network list'")
    else:
        from cci_core.networking import policy_for

        plan = policy_for(state.config, state.plugins.registries).plan(state.config.network)
        if plan is None or plan.proxy is None:
            raise UsageError(f"network policy {state.config.network.mode!r} has no proxy: it logs no requests",
                             hint="name a container or network, or use a policy with a proxy")
        found = next((item for item in networks
                      if (item.plan.policy, item.plan.identity) == (plan.policy, plan.identity)), None)
        if found is None:
            raise NotFoundError("this workspace's proxy is not made yet (the next session with its policy makes it)",
                                hint="see 'cci network list'")
    if found.plan.proxy is None:
        raise UsageError(f"network {found.name} ({found.plan.policy}) has no proxy: it logs no requests")
    return found.name


def _record_line(record: RequestRecord) -> str:
    from cci_core.terminal_text import printable

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.time))
    verdict = "ALLOWED" if record.allowed else "DENIED "
    target = f"{record.host}:{record.port}" if record.port else record.host
    sni = f" sni={record.sni}" if record.sni and record.sni != record.host else ""
    text = (f"{when} {verdict} {record.method} {target}{sni} {record.status or '-'} [{record.rule or '-'}] "
            f"{record.sent}/{record.received} B {record.duration_ms} ms")
    return printable(text)


def _record_json(record: RequestRecord) -> str:
    import json

    from cci_core.terminal_text import escape_in_string

    return escape_in_string(json.dumps(record._asdict(), ensure_ascii=False))


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
@_FORMAT
@click.pass_context
def presets(ctx: click.Context, fmt: str) -> None:
    """List the host lists [network] presets can name, with their hosts."""
    registry = get_state(ctx).plugins.registries.network_presets
    entries = registry.entries()
    if fmt == "json":
        _echo_json([{"name": entry.name, "hosts": list(entry.item.hosts), "summary": entry.item.summary,
                     "plugin": entry.plugin} for entry in entries])
        return
    print_table(["NAME", "SUMMARY", "HOSTS"],
                [[entry.name, entry.item.summary, ", ".join(entry.item.hosts)] for entry in entries],
                empty="no presets (their plugins may be disabled)")


@network.command()
@click.argument("names", nargs=-1)
@click.option("--unused", is_flag=True, help="Every policy network no container uses.")
@click.pass_context
def delete(ctx: click.Context, names: Sequence[str], unused: bool) -> None:
    """Delete policy networks NAMES (or --unused ones), with their proxies; cci makes them again when a session
    needs them."""
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
        "proxy": None if plan.proxy is None else {
            "container": found.proxy or None if found else None,
            "status": found.proxy_status or None if found else None,
            "rules": [{"action": rule.action, "pattern": rule.pattern, "ports": list(rule.ports),
                       "source": rule.source} for rule in plan.proxy.rules],
            "hosts": dict(plan.proxy.hosts),
        },
    }


def _show_proxy(plan: NetworkPlan, found: PolicyNetwork | None) -> None:
    """The proxy part of ``cci network show``: the proxy container, its host rules with their sources, its host map."""
    from cci_core.network_policy import DEFAULT_PORTS
    from cci_core.terminal_text import printable

    assert plan.proxy is not None
    where = f"{found.proxy} ({found.proxy_status})" if found and found.proxy else "not made yet"
    click.echo(f"proxy    {where}; containers reach nothing else (the rules above are the proxy's own egress)")
    click.echo("host rules (denials win over allows; a request no rule allows is denied):")
    print_table(["  ACTION", "HOST", "PORTS", "FROM"],
                [[f"  {rule.action}", printable(rule.pattern), ",".join(map(str, rule.ports or DEFAULT_PORTS)),
                  printable(rule.source or "-")] for rule in plan.proxy.rules])
    if plan.proxy.hosts:
        click.echo("hosts (the proxy's own names):")
        print_table(["  NAME", "ADDRESS"], [[f"  {printable(name)}", printable(address)]
                                           for name, address in sorted(plan.proxy.hosts.items())])


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
    if plan.proxy is not None:
        _show_proxy(plan, found)
    if plan.addresses:
        click.echo("addresses:")
        print_table(["  NAME", "IPV4"],
                    [[f"  {name}", " ".join(found_) or "(none: unreachable)"] for name, found_ in plan.addresses.items()])
    for note in plan.notes:
        warn(note)
