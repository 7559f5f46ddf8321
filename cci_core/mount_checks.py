"""Which host directories may be mounted read-write into a container (the workspace, ``--storage``)."""

from __future__ import annotations

from pathlib import Path

from cci_core.errors import UsageError

#: directories of your home that hold credentials, or files your machine trusts and runs (``~/.local/bin``,
#: ``~/.config/autostart``, systemd user units): never a workspace, nor inside one
SENSITIVE_IN_HOME = (".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".config", ".local",
                     ".password-store", ".pki", ".claude", ".codex")


def check_mountable(directory: Path, kind: str = "workspace") -> None:
    """Refuse a workspace (or ``--storage`` directory) that holds your home or cci's own files, or lies in
    one of :data:`SENSITIVE_IN_HOME`, cci's files or cci's config.

    It is mounted read-write: the agent could read all of your home (``~/.ssh``
    too), plant keys or programs your machine trusts, and rewrite cci's config or
    saved sessions, which no trust check guards.
    """
    from cci_core.config import user_config_file

    home = Path.home().resolve()
    guarded = [("your home directory", home, False),
               ("cci's files", (home / ".cci").resolve(), True),
               ("your cci config", user_config_file().parent.resolve(), True)]
    guarded += [(f"~/{name}", (home / name).resolve(), True) for name in SENSITIVE_IN_HOME]
    for what, path, inside_too in guarded:
        holds = directory == path or directory in path.parents
        if holds or (inside_too and path in directory.parents):
            raise UsageError(f"{kind} {directory} {'holds' if holds else 'is in'} {what} ({path}): the container "
                             "would get it read-write", hint=f"use a project directory as the {kind}")
