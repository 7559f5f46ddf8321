"""``cci list``: cci's session containers (and, with --all, saved sessions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cci_core.cli.sessions import manager_for
from cci_core.cli.table import print_table

if TYPE_CHECKING:
    from cci_core.driver import ContainerInfo

@click.command("list")
@click.option("--all", "everything", is_flag=True, help="Also list saved sessions.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def list_(ctx: click.Context, everything: bool, fmt: str) -> None:
    """List cci containers of every workspace, each ephemeral or persistent.

    Sessions that ended while no cci process was watching (poweroff inside,
    a closed terminal) are finished first: saved, then deleted unless persistent.
    """
    rows = [_container_row(info) for info in manager_for(ctx).current()]
    sessions = _saved_sessions() if everything else None
    if fmt == "json":
        import json

        document: dict[str, Any] = {"containers": rows}
        if sessions is not None:
            document["sessions"] = sessions
        click.echo(json.dumps(document, indent=2))
        return
    print_table(["NAME", "STATUS", "MODE", "NETWORK", "WORKSPACE", "SLOT", "TOOL", "ENDS"],
                [[r["name"], r["status"], r["mode"], r["network"], r["workspace"], str(r["slot"]), r["tool"] or "-",
                  _local_time(r["deadline"])] for r in rows],
                empty="no cci containers")
    if sessions is not None:
        click.echo()
        print_table(["SESSION", "TOOL", "WORKSPACE", "SAVED"],
                    [[s["id"], s["tool"], s["workspace"], s["saved"]] for s in sessions], empty="no saved sessions")


def _container_row(info: ContainerInfo) -> dict[str, Any]:
    """One container in the JSON schema of ``cci list --format json`` (docs/cli.md): add fields, never rename."""
    from cci_core.ports import as_json
    from cci_core.limits import iso_time, read_summary
    from cci_core.session_record import Mode, SessionRecord

    record = SessionRecord.from_labels(info.labels)
    return {
        "name": info.name,
        "status": info.status,
        "mode": (record.mode or Mode.EPHEMERAL).value,
        "workspace": record.workspace or "",
        "slot": record.slot,
        "tool": record.tool or "",
        "session": record.session or "",
        "state": record.state.value if record.state else "",
        "kind": record.kind.value if record.kind else "",
        "created": info.created,
        "network": record.network or "open",  # containers from before network policies: the profile's
        "limits": read_summary(record.limits or ""),  # what was set ([limits]) when it last started
        "deadline": iso_time(record.deadline) if record.deadline is not None else None,
        "ports": [as_json(port) for port in info.ports],
    }


def _local_time(deadline: str | None) -> str:
    """When a session ends ([limits] duration), in local time (``-``: no limit)."""
    if deadline is None:
        return "-"
    import datetime

    moment = datetime.datetime.strptime(deadline, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _saved_sessions() -> list[dict[str, Any]]:
    """Saved sessions of every tool, newest first (see :mod:`cci_core.session_store`)."""
    from cci_core.session_store import SessionStore

    return [session.as_json() for session in SessionStore().sessions()]
