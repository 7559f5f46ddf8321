"""The global flags of the spec, usable before the subcommand (``cci --slot 2 shell``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import click

if TYPE_CHECKING:
    from cci_core.config import Override

#: the value of ``--resume``/``--continue`` given without an id: resume the latest session
LATEST_SESSION = "latest"

#: flags that only make sense for commands that start a session
SESSION_FLAGS = ("slot", "resume", "continue_")

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _parse_env(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise click.BadParameter(f"{item!r} is not KEY=VALUE with KEY a valid variable name", ctx, param)
        parsed[key] = value
    return parsed


def _parse_limits(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``--limit KEY=VALUE``: KEY a ``[limits]`` key, VALUE checked as the key is in a file."""
    from cci_core.config.loader import check_text_setting

    parsed: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        problem = check_text_setting("limits", key, value) if sep else f"{item!r} is not KEY=VALUE (e.g. memory=4GiB)"
        if problem:
            raise click.BadParameter(problem, ctx, param)
        parsed[key] = value
    return parsed


def with_global_options(command: click.Command | None = None, *, hide: tuple[str, ...] = (),
                        helps: Mapping[str, str] | None = None) -> Any:
    """Let a session command also take the global flags after its name (``cci shell --slot 2``); as
    ``@with_global_options(hide=..., helps=...)``, with those that do not apply to it (by parameter name) left out
    of its help (still parsed: the command refuses them in one line), and its own help for some."""
    def add(command: click.Command) -> click.Command:
        options = global_options()
        for option in options:
            option.hidden = option.name in hide
            if helps and option.name in helps:
                option.help = helps[option.name]
        command.params[:0] = options
        return command

    return add(command) if command is not None else add


def global_options() -> list[click.Option]:
    """Fresh option objects for the global flags (one set per command that accepts them).

    ``--workspace`` and ``--profile`` are eager: they decide which config is
    read and so which plugin commands exist, even for ``cci --workspace X --help``.
    """
    return [
        click.Option(["--workspace"], type=click.Path(file_okay=False, path_type=Path), metavar="PATH", is_eager=True,
                     help="Workspace directory to mount (default: current directory)."),
        click.Option(["--slot"], type=click.IntRange(min=0), metavar="NUMBER",
                     help="Slot number for parallel sessions (0 = auto-allocate)."),
        click.Option(["--persistent/--ephemeral"], default=None,
                     help="Keep the container between sessions (default: [defaults] persistent)."),
        click.Option(["--resume"], is_flag=False, flag_value=LATEST_SESSION, default=None, metavar="[SESSION_ID]",
                     help="Resume a session (omit the id for this workspace's latest)."),
        click.Option(["--continue", "continue_"], is_flag=False, flag_value=LATEST_SESSION, default=None,
                     metavar="[SESSION_ID]", help="Alias for --resume."),
        click.Option(["--profile"], metavar="NAME", is_eager=True, help="Use the named [profiles.NAME] from the config."),
        click.Option(["--remote"], metavar="NAME",
                     help="Use this remote of the incus CLI ('incus remote list'; local: this host's Incus)."),
        click.Option(["--image"], metavar="NAME", help="Image to launch (default: cci)."),
        click.Option(["--env", "env"], multiple=True, metavar="KEY=VALUE", callback=_parse_env,
                     help="Set an environment variable in the container (repeatable)."),
        click.Option(["--storage"], multiple=True, type=click.Path(path_type=Path), metavar="PATH",
                     help="Mount persistent storage (repeatable)."),
        click.Option(["--network"], metavar="MODE", help="Network policy: restricted, allowlist, proxy, open, or a plugin's."),
        click.Option(["--tool"], metavar="NAME", help="AI coding tool to run (default: claude)."),
        click.Option(["--port", "port"], multiple=True, metavar="[ADDRESS:]HOST:CONTAINER",
                     help="Publish a container port on the host (repeatable; adds to [ports] publish)."),
        click.Option(["--limit", "limit"], multiple=True, metavar="KEY=VALUE", callback=_parse_limits,
                     help="Set a [limits] key for this session: cpu, memory, processes, disk, duration, save_size "
                          "(repeatable)."),
    ]


class GlobalOptions(NamedTuple):
    """The parsed global flags; ``None`` means "not given"."""

    workspace: Path | None = None
    slot: int | None = None
    persistent: bool | None = None
    resume: str | None = None
    continue_: str | None = None
    profile: str | None = None
    remote: str | None = None
    image: str | None = None
    env: Mapping[str, str] | None = None
    storage: tuple[Path, ...] = ()
    network: str | None = None
    tool: str | None = None
    port: tuple[str, ...] = ()
    limit: Mapping[str, str] | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GlobalOptions:
        """Build from click's parsed parameters, ignoring everything that is not a global flag."""
        names = cls._fields
        return cls(**{key: value for key, value in params.items() if key in names and value not in (None, (), {})})

    def given_session_flags(self) -> list[str]:
        """The session-only flags that were given, as they are spelled on the command line."""
        return [f"--{name.rstrip('_')}" for name in SESSION_FLAGS if getattr(self, name) is not None]

    def overrides(self) -> list[Override]:
        """The config overrides these flags imply, highest layer of the config."""
        from cci_core.config import Override

        result = []
        if self.remote is not None:
            result.append(Override("incus.remote", self.remote, "--remote"))
        if self.image is not None:
            result.append(Override("defaults.image", self.image, "--image"))
        if self.persistent is not None:
            result.append(Override("defaults.persistent", self.persistent,
                                   "--persistent" if self.persistent else "--ephemeral"))
        if self.env:
            result.append(Override("defaults.environment", dict(self.env), "--env"))
        if self.network is not None:
            result.append(Override("network.mode", self.network, "--network"))
        if self.tool is not None:
            result.append(Override("tool.name", self.tool, "--tool"))
        if self.port:
            result.append(Override("ports.publish", list(self.port), "--port", extend=True))
        for key, value in (self.limit or {}).items():
            result.append(Override(f"limits.{key}", value, "--limit"))
        return result
