"""``cci list``: cci's session containers (and, with --all, saved sessions)."""

from __future__ import annotations

from typing import Any

import click

from cci_core.cli.sessions import manager_for
from cci_core.cli.table import print_table

#: the JSON schema of ``cci list --format json`` (documented in docs/cli.md); add fields, never rename
CONTAINER_FIELDS = ("name", "status", "mode", "workspace", "slot", "tool", "session", "state", "kind", "created",
                    "network")


@click.command("list")
@click.option("--all", "everything", is_flag=True, help="Also list saved sessions.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def list_(ctx: click.Context, everything: bool, fmt: str) -> None:
    """List cci containers of every workspace, each ephemeral or persistent.

    Sessions that ended while no cci process was watching (poweroff inside,
    a closed terminal) are finished first: saved, then deleted unless persistent.
    """
    from cci_core.session import is_session

    manager = manager_for(ctx)
    listing = manager.driver.list_containers()
    finished = set(manager.reconcile(listing))
    rows = [_container_row(info) for info in listing if is_session(info.labels) and info.name not in finished]
    sessions = _saved_sessions() if everything else None
    if fmt == "json":
        import json

        document: dict[str, Any] = {"containers": rows}
        if sessions is not None:
            document["sessions"] = sessions
        click.echo(json.dumps(document, indent=2))
        return
    print_table(["NAME", "STATUS", "MODE", "NETWORK", "WORKSPACE", "SLOT", "TOOL"],
                [[r["name"], r["status"], r["mode"], r["network"], r["workspace"], str(r["slot"]), r["tool"] or "-"]
                 for r in rows],
                empty="no cci containers")
    if sessions is not None:
        click.echo()
        print_table(["SESSION", "TOOL", "WORKSPACE", "SAVED"],
                    [[s["id"], s["tool"], s["workspace"], s["saved"]] for s in sessions], empty="no saved sessions")


def _container_row(info: Any) -> dict[str, Any]:
    labels = info.labels
    slot = labels.get("slot", "")
    return {
        "name": info.name,
        "status": info.status,
        "mode": labels.get("mode", "ephemeral"),
        "workspace": labels.get("workspace", ""),
        "slot": int(slot) if slot.isdigit() else None,
        "tool": labels.get("tool", ""),
        "session": labels.get("session", ""),
        "state": labels.get("state", ""),
        "kind": labels.get("kind", ""),
        "created": info.created,
        "network": labels.get("network") or "open",  # containers from before network policies: the profile's
    }


def _saved_sessions() -> list[dict[str, Any]]:
    """Saved sessions of every tool, newest first (see :mod:`cci_core.session_store`)."""
    from cci_core.session_store import SessionStore

    return [session.as_json() for session in SessionStore().sessions()]
