"""The tool-adapter interface: how cci runs one AI coding tool (Claude Code, ...)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:
    from cci_core.config import Config


class CredentialFile(NamedTuple):
    """A host file copied into the container at every start, never saved with a session.

    :param host_path: path on the host; ``~`` is the invoking user's home.
    :param container_path: path relative to the container user's home.
    :param mode: file mode inside the container.
    """

    host_path: str
    container_path: str
    mode: int = 0o600


class ImageFile(NamedTuple):
    """A file a tool puts into an image, fetched and verified on the host.

    :param path: absolute path inside the image (e.g. ``/usr/local/bin/claude``).
    :param source: the host file holding the content.
    :param mode: file mode inside the image (owned by root).
    """

    path: str
    source: Path
    mode: int = 0o755


class ImageFetch(NamedTuple):
    """Where and which version of a tool an image build fetches.

    :param version: the version asked for (``latest``: the newest release).
    :param registry: the package registry's URL, or None for the tool's default.
    """

    version: str = "latest"
    registry: str | None = None


def tool_version_property(tool: str) -> str:
    """The image property holding the version of ``tool`` an image carries (``cci.tool.claude.version``)."""
    return f"cci.tool.{tool}.version"


class ToolAdapter(ABC):
    """One AI coding tool, selected by ``[tool] name`` or ``--tool``.

    Subclasses set the class attributes and are registered with
    ``register.add_tool(cls)``. The core starts :meth:`command` in tmux as the
    container user in ``/workspace``; it saves :attr:`state_dir` after every
    session (without the credential files) and restores it before a resume.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: the executable run inside the container (overridable with ``[tool] binary``)
    default_binary: ClassVar[str]
    #: the tool's state directory, relative to the container user's home; saved per session
    state_dir: ClassVar[str]
    #: host files injected fresh at every start and resume (when ``[defaults] inject_credentials``)
    credential_files: ClassVar[tuple[CredentialFile, ...]] = ()
    #: keys whose values are secrets in the tool's JSON files (tokens, API keys): removed, with their values,
    #: from every JSON file a save keeps (backups too), and their values in the injected credential files
    #: make any saved file holding one of them be left out
    secret_keys: ClassVar[frozenset[str]] = frozenset()

    #: where the tool reads the sandbox brief (``cci_sandbox_brief``), relative to the container user's home; a
    #: file of the tool's own instructions, never in the workspace (None: the tool reads none)
    brief_path: ClassVar[str | None] = None

    #: the invocation's merged config, set by cci when it makes the adapter (:func:`~cci_core.registry.make_tool`): a tool reads the
    #: section its plugin declares with ``self.config.section("mytool")``; None for an adapter made by hand
    config: Config | None = None

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or self.default_binary

    @abstractmethod
    def command(self, session_id: str, *, resume: bool) -> list[str]:
        """The argv that starts a new session with ``session_id`` (a UUID cci chose), or resumes it."""

    def headless_command(self, session_id: str, *, resume: bool, structured: bool) -> list[str] | None:
        """The argv that runs one prompt non-interactively (``cci run --prompt``), the prompt read on its standard
        input; ``structured``: the tool's machine-readable output (``--format json``). None: no headless mode.

        It starts a new session ``session_id`` or, with ``resume``, continues that saved session.
        """
        return None

    def sandbox_settings(self) -> Mapping[str, Mapping[str, Any]]:
        """Settings files (relative to the container user's home) and the keys merged into them at every start.

        For what the tool needs to run unattended in the sandbox (skip
        first-run and permission prompts). Merged recursively into what is
        there (the user's own settings, injected or restored), never replacing
        it. A file whose name ends in ``.toml`` is TOML, any other is JSON.
        """
        return {}

    def environment(self) -> Mapping[str, str]:
        """Variables the tool needs in the container (added to the session's environment)."""
        return {}

    def credential_secrets(self) -> Mapping[str, str]:
        """Secrets the host's credential files hold that a proxy can pass by placeholder: secret name -> value.

        Each name is a secret a plugin declares (``register.add_secret``). Under a plan with a proxy,
        the injected files carry the placeholder in each value's place; the proxy sends the value.
        """
        return {}

    # -- what the tool puts into an image: used by 'cci build'; a tool returning None/() adds nothing ------------

    def image_version(self, fetch: ImageFetch) -> str | None:
        """The exact version an image build would put in (``latest`` resolved), or None: this tool adds nothing.

        Asked before the build, so that an image of the same recipe is kept;
        raises a :class:`~cci_core.errors.CciError` when the registry cannot say.
        """
        return None

    def image_files(self, version: str, fetch: ImageFetch, say: Callable[[str], None]) -> tuple[ImageFile, ...]:
        """Fetch (on the host) and verify the files of ``version`` that go into the image; ``say`` reports progress.

        The builder copies them in and records ``version`` as the image property
        :func:`tool_version_property`.
        """
        return ()

