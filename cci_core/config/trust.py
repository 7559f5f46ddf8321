"""Trusting a workspace's ``.cci.toml``: it takes effect only as the user approved it.

The workspace is mounted read-write into the container, so whatever runs there
can write ``.cci.toml``, and a workspace config can loosen the sandbox: open the
network, point cci at another Incus, enable a plugin, change which tool's
credentials are copied in. So cci acts on a workspace config only when its exact
content was trusted with ``cci config trust`` (as direnv and mise do); the SHA-256
of each trusted file is kept in ``~/.cci/trusted-configs.json`` (0600).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cci_core.errors import ConfigError
from cci_core.layout import state_dir


class _Read(Protocol):
    """What trust is decided from: a merged :class:`~cci_core.config.Config` or the layers it is merged from."""

    @property
    def workspace(self) -> Path: ...

    @property
    def workspace_digest(self) -> str: ...


def default_store() -> Path:
    """``~/.cci/trusted-configs.json`` of the invoking user."""
    return state_dir() / "trusted-configs.json"


class TrustStore:
    """Trusted workspace config files: resolved path -> SHA-256 of the trusted content."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_store()

    def load(self) -> dict[str, str]:
        """Every trusted file; an unreadable store trusts nothing."""
        from cci_core.private_files import read_json

        document = read_json(self.path)
        return {str(key): str(value) for key, value in document.items()} if isinstance(document, dict) else {}

    def trusts(self, file: Path, digest: str) -> bool:
        return self.load().get(str(file)) == digest

    def trust(self, file: Path, digest: str) -> None:
        self._write({**self.load(), str(file): digest})

    def revoke(self, file: Path) -> bool:
        """Forget ``file``; whether it was trusted."""
        entries = self.load()
        if entries.pop(str(file), None) is None:
            return False
        self._write(entries)
        return True

    def _write(self, entries: dict[str, str]) -> None:
        from cci_core.private_files import replace_private_json

        replace_private_json(self.path, dict(sorted(entries.items())))


def workspace_file(config: _Read) -> Path:
    """The workspace's ``.cci.toml`` (whether or not it exists)."""
    from cci_core.config.loader import WORKSPACE_FILE

    return config.workspace / WORKSPACE_FILE


def is_trusted(config: _Read, store: TrustStore | None = None) -> bool:
    """Whether the workspace config sets nothing, or is trusted as it is now."""
    if not config.workspace_digest:
        return True
    return (store or TrustStore()).trusts(workspace_file(config), config.workspace_digest)


def require_trusted(config: _Read, store: TrustStore | None = None) -> None:
    """Refuse a workspace config that sets anything and is not trusted as it is now."""
    store = store or TrustStore()
    if is_trusted(config, store):
        return
    file = workspace_file(config)
    changed = str(file) in store.load()
    from cci_core.config.sources import display_path

    raise ConfigError(
        f"{display_path(file)} {'changed since you trusted it' if changed else 'is not trusted'}: a workspace "
        "config can loosen the sandbox, and code in a container can write it",
        hint="read it, then run 'cci config trust' in the workspace",
    )
