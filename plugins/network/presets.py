"""Host lists for ``[network] presets``: the built-in ``github`` and ``package-registries`` (``claude-code`` is the
Claude Code adapter's), and looking up any preset a plugin registered."""

from __future__ import annotations

from collections.abc import Mapping

#: GitHub's web and API hosts, and what git, gh and release downloads fetch from (raw files, archives, assets)
GITHUB = ("github.com", "api.github.com", "codeload.github.com", "uploads.github.com", ".githubusercontent.com")

#: the public registries of npm, PyPI, crates.io and Go modules, and the Debian and Ubuntu archives, by the
#: names each one's documentation gives
PACKAGE_REGISTRIES = (
    "registry.npmjs.org",
    "pypi.org", "files.pythonhosted.org",
    "crates.io", "static.crates.io", "index.crates.io",
    "proxy.golang.org", "sum.golang.org",
    "deb.debian.org", "security.debian.org", "archive.ubuntu.com", "security.ubuntu.com",
)


def registered_presets() -> Mapping[str, tuple[str, ...]]:
    """Preset name -> host patterns, of the plugins the running ``cci`` command loaded (none outside a command)."""
    from cci_core.api import current_plugins

    try:
        registry = current_plugins().registries.network_presets
    except RuntimeError:
        return {}
    return {entry.name: entry.item.hosts for entry in registry.entries()}
