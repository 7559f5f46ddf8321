"""The per-session context object handed to every lifecycle hook."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.network_policy import NetworkPlan
    from cci_core.secrets import Substitution
    from cci_core.tool import ToolAdapter


class SessionEvent(enum.Enum):
    """Why :func:`~cci_core.hookspecs.cci_session_save` is called."""

    DETACH = "detach"
    PERIODIC = "periodic"
    REQUESTED = "requested"


class Mount(NamedTuple):
    """A host directory mounted into the container.

    :param device: unique device name (``[a-z0-9-]``), e.g. ``workspace``.
    :param source: absolute host path.
    :param path: absolute path inside the container.
    :param shift: map host ownership to the container user (idmapped mount).
    :param readonly: mount read-only.
    """

    device: str
    source: Path
    path: str
    shift: bool = True
    readonly: bool = False


@dataclass
class LaunchContext:
    """Everything the lifecycle hooks need to know about one session.

    The core creates it (a later process rebuilds it from the container's labels);
    plugins read it and may adjust ``environment`` in
    :func:`~cci_core.hookspecs.cci_pre_launch`. ``image`` is read-only: the image
    (``[defaults] image``) new containers are made from, made before the hook runs.
    """

    config: Config
    workspace: Path
    container_name: str
    slot: int
    session_id: str
    persistent: bool
    image: str
    tool: ToolAdapter | None = None
    resume_from: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    storage: tuple[Path, ...] = ()
    substitutions: tuple[Substitution, ...] = ()
    """The secrets of this launch passed by placeholder (see :mod:`cci_core.secrets`): a tool's credential files
    are injected with each :attr:`~Substitution.value` replaced by its placeholder."""

    network_policy: str = ""
    """The network policy the session is under (``[network] mode``; "" when not known)."""
    network_plan: NetworkPlan | None = None
    """That policy's plan as enforced (None: no plan, as under ``open``, or not known): what the container can reach,
    for the sandbox brief (:func:`~cci_core.hookspecs.cci_sandbox_brief`)."""
    synced: bool = False
    """The workspace is a copy in the container, not a mount: the server cannot mount this host's paths (a remote
    Incus); cci copies it in at the launch and back at every save (:mod:`cci_core.workspace_sync`)."""

    def plugin_settings(self, plugin: str) -> Mapping[str, Any]:
        """The ``[plugins.<plugin>]`` settings from the merged config."""
        return self.config.plugin_settings(plugin)
