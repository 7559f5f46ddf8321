"""The sandbox brief: a short Markdown text the tool reads at start, telling the agent where it runs and how to ask
for more.

It says that the agent runs in a cci container (root-capable through sudo, the project at ``/workspace``, nothing
else of the host there), the limits set, what the network policy lets it reach (the policy's plugin writes that
paragraph), the published ports (the ports plugin's), and which settings the user changes to give it more. The
core writes its own paragraphs and collects the others through the ``cci_sandbox_brief`` hook.

It goes where the tool reads its user instructions (:attr:`~cci_core.tool.ToolAdapter.brief_path`, under the
container user's home; Claude Code: ``~/.claude/CLAUDE.md``), never into the workspace. cci owns only the block
between :data:`BEGIN` and :data:`END` in that file and replaces it at every start; the rest (the user's own
instructions, restored with a saved session or written by the agent) stays. The file is the container's: it is
read and written through :mod:`cci_core.home_files` (a link or a FIFO there is removed, never followed or opened;
a directory refuses it), and an existing file is read only up to :data:`MAX_EXISTING` bytes. The brief is
information for the agent, never a control.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cci_core.errors import CciError
from cci_core.home_files import home_path, read_home_file, write_home_file
from cci_core.layout import CONTAINER_HOME, CONTAINER_USER, WORKSPACE_PATH

if TYPE_CHECKING:
    from cci_core.context import LaunchContext
    from cci_core.driver import Container
    from cci_core.plugin_manager import Plugins
    from cci_core.session import SessionManager

#: the first line of cci's block in the brief's file
BEGIN = "<!-- cci sandbox brief: cci replaces this block at every start; your own text goes outside it -->"
#: its last line
END = "<!-- end of the cci sandbox brief -->"
#: the largest existing file read to keep the text around the block (larger: the brief is not written)
MAX_EXISTING = 256 * 1024


def core_paragraphs(ctx: LaunchContext) -> list[str]:
    """What the core says: where the agent runs, and the limits set."""
    where, shared = ("on a server away from the user's machine", "a copy of the user's project, copied back to "
                     "their machine when the session is saved and when it ends") if ctx.synced else \
        ("on the user's machine", "shared with the user's machine")
    paragraphs = [
        "# You run in a cci sandbox\n\n"
        f"This is a cci container (an Incus system container) {where}. You are the user "
        f"`{CONTAINER_USER}` (home `{CONTAINER_HOME}`) with passwordless `sudo`: root inside. The project is at "
        f"`{WORKSPACE_PATH}`, {shared}; nothing else of the user's machine is here (no other files, "
        "no SSH keys, no credentials of the user's)."
    ]
    limits = limit_lines(ctx)
    if limits:
        paragraphs.append("**Limits:** " + "; ".join(limits) + ". Past them a process fails (fork, memory, disk "
                          "full) or the session ends.")
    return paragraphs


def limit_lines(ctx: LaunchContext) -> list[str]:
    """The ``[limits]`` in force, in words (those set only)."""
    limits = ctx.config.limits
    found = []
    if limits.cpu:
        found.append(f"CPUs {limits.cpu}")
    if limits.memory:
        found.append(f"memory {limits.memory}")
    if limits.processes:
        found.append(f"{limits.processes} processes")
    if limits.disk:
        found.append(f"root disk {limits.disk}")
    if limits.duration:
        found.append(f"the session ends after {limits.duration}")
    return found


#: the last paragraph: how to get more
ASK_FOR_MORE = (
    "**Need more?** You cannot change any of this from inside: ask the user. They allow a host with "
    "`[network] allowed_domains` (or `presets`), publish a port with `cci port add` (or `[ports] publish`), "
    "raise a limit in `[limits]`, in `~/.config/cci/config.toml` or the project's `.cci.toml` (which they must "
    "trust again with `cci config trust` after any change); network and limits apply at the next session start."
)


def brief_text(plugins: Plugins, ctx: LaunchContext, container: Container) -> str:
    """The brief's block: the core's paragraphs, the plugins' (``cci_sandbox_brief``), then how to ask for more."""
    # pluggy calls the last plugin registered first: its answers reversed follow the plugins' order (the
    # built-ins' as listed, the network policy before the ports), whatever order they were loaded in
    contributions = plugins.hook.cci_sandbox_brief(ctx=ctx, container=container)[::-1]
    paragraphs = [*core_paragraphs(ctx), *paragraphs_of(contributions), ASK_FOR_MORE]
    return "\n".join([BEGIN, "\n\n".join(paragraphs), END]) + "\n"


def merged(existing: str, block: str) -> str:
    """``existing`` with every cci block (and stray marker line) taken out, ``block`` put first."""
    kept: list[str] = []
    inside = False
    lines = existing.splitlines(keepends=True)
    for index, line in enumerate(lines):
        marker = line.strip()
        if marker == BEGIN:
            # an unterminated block (cut short) is dropped with its marker only
            inside = any(later.strip() == END for later in lines[index + 1:])
        elif marker == END:
            inside = False
        elif not inside:
            kept.append(line)
    rest = "".join(kept).lstrip("\n")
    return block + ("\n" + rest if rest.strip() else "")


def write_brief(plugins: Plugins, ctx: LaunchContext, container: Container,
                warn: Callable[[str], None] | None = None) -> bool:
    """Write the brief into the running ``container`` where ``ctx.tool`` reads it: False when the tool reads none,
    or (said through ``warn``) when the container's files keep it from being written.

    The file is read and written as :mod:`cci_core.home_files` says (no link followed, nothing but a regular file
    read, the file made anew, the container user's, 0600); a directory at its place, or a file over
    :data:`MAX_EXISTING` bytes there, is left as it is.
    """
    tool = ctx.tool
    if tool is None or not tool.brief_path:
        return False
    path = home_path(tool.brief_path)

    def refused(why: str) -> bool:
        if warn is not None:
            warn(f"the sandbox brief was not written to {container.name}:{path}: {why}")
        return False

    try:
        existing = read_home_file(container, path, MAX_EXISTING)
        content = merged((existing or b"").decode("utf-8", errors="replace"), brief_text(plugins, ctx, container))
        write_home_file(container, path, content.encode(), uid=container.user_uid)
    except CciError as exc:
        return refused(str(exc))
    return True


def rewrite_brief(manager: SessionManager, container: Container) -> bool:
    """Write the brief again into a running session (what it says changed: ``cci port add``), its context rebuilt
    from the container's labels and its network's plan; False as :func:`write_brief`, or when it is not running."""
    if container.status() != "running":
        return False
    ctx = manager.context(container.name, container.labels())
    ctx.network_plan = next((network.plan for network in manager.driver.policy_networks()
                             if container.name in network.used_by), None)
    return write_brief(manager.plugins, ctx, container, manager.warn)


def paragraphs_of(contributions: Sequence[Sequence[str] | str | None]) -> list[str]:
    """The non-empty paragraphs of the hook's answers, stripped, in order (a plugin's lone string is one)."""
    return [paragraph.strip() for contribution in contributions
            for paragraph in ([contribution] if isinstance(contribution, str) else contribution or ())
            if paragraph.strip()]
