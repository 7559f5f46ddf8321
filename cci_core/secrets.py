"""Secrets by placeholder: the container holds a stand-in, the network policy's proxy sends the real value.

A plugin declares what it knows with ``register.add_secret(SecretSpec(...))`` (the Claude
Code adapter: ``ANTHROPIC_API_KEY``; the network plugin: ``GH_TOKEN``, ``GITHUB_TOKEN``); the
user names the host variables to pass in ``[secrets]``. At a launch under a plan with a
proxy, each becomes a :class:`Substitution`: the container's variable holds
:attr:`Substitution.placeholder`, and the driver's proxy puts the real value in its place in
request headers to the secret's hosts only (:meth:`cci_core.driver.Driver.route_secrets`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.network_policy import NetworkPlan, NetworkPolicy
    from cci_core.tool import ToolAdapter


class SecretSpec(NamedTuple):
    """A kind of secret: the variable that carries it, the hosts it is for and the headers it travels in.

    :param name: the environment variable in the container (and, unless ``[secrets]`` says
        otherwise, on the host) holding it: ``GH_TOKEN``.
    :param hosts: host patterns (as in ``allowed_domains``) the real value may be sent to.
    :param headers: the header forms carrying it, ``{}`` standing for the value:
        ``"Authorization: Bearer {}"``, ``"x-api-key: {}"``; ``{basic:USER}`` stands for the
        Basic credentials ``base64(USER:value)`` (``"Authorization: Basic {basic:x-access-token}"``).
    :param placeholder_prefix: how its placeholder starts (some tools check a key's shape).
    """

    name: str
    hosts: tuple[str, ...]
    headers: tuple[str, ...] = ("Authorization: Bearer {}",)
    summary: str = ""
    placeholder_prefix: str = "cci-placeholder-"


class Substitution(NamedTuple):
    """One secret of one launch: what the container sees (``placeholder``) and what the proxy sends."""

    name: str
    placeholder: str
    value: str
    hosts: tuple[str, ...]
    headers: tuple[str, ...]

    def __repr__(self) -> str:  # never print the value
        return f"Substitution({self.name!r}, placeholder={self.placeholder!r}, hosts={self.hosts!r})"


#: a header name: an HTTP token (RFC 9110)
_HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z"


def header_problem(header: str) -> str | None:
    """Why ``header`` (``"Name: template"``) cannot carry a secret, or None."""
    import re

    name, colon, template = header.partition(":")
    if not colon or not re.match(_HEADER_NAME, name):
        return f"{header!r} does not start with a header name and ':' (write 'Authorization: Bearer {{}}')"
    if any(ord(char) < 32 or ord(char) == 127 for char in header):
        return f"{header!r} has a control character"
    slots = re.findall(r"\{(?:basic:[^{}]+)?\}", template)
    if len(slots) != 1 or template.count("{") != 1 or template.count("}") != 1:
        return f"{header!r} needs exactly one '{{}}' (the value) or '{{basic:USER}}' (Basic credentials of USER)"
    if not re.match(r"[A-Za-z0-9 ._~+/=:@,;()-]*\Z", template.replace(slots[0], "")) or \
            not re.match(r"\{(basic:[A-Za-z0-9._~+=@-]+)?\}\Z", slots[0]):
        return (f"{header!r} has a character a header form may not hold (letters, digits, spaces and "
                "-._~+/=:@,;() only)")
    return None


def spec_problem(spec: SecretSpec) -> str | None:
    """Why a plugin's :class:`SecretSpec` is unusable, or None."""
    if isinstance(spec.hosts, str) or not spec.hosts or not all(isinstance(host, str) for host in spec.hosts):
        return "it names no hosts (a tuple of host patterns)"
    if isinstance(spec.headers, str) or not spec.headers:
        return "it names no headers"
    for header in spec.headers:
        problem = header_problem(header) if isinstance(header, str) else f"{header!r} is not a string"
        if problem:
            return problem
    import re

    if not isinstance(spec.placeholder_prefix, str) or not re.match(r"[A-Za-z0-9._-]*\Z", spec.placeholder_prefix):
        return f"its placeholder prefix {spec.placeholder_prefix!r} is not letters, digits, '-', '.' and '_'"
    return None


#: the placeholder's prefix for a secret no plugin declares
DEFAULT_PREFIX = SecretSpec("X", ("x",)).placeholder_prefix
#: the header form of a secret no plugin declares and ``[secrets] headers`` does not name
DEFAULT_HEADERS = SecretSpec("X", ("x",)).headers
#: characters a secret's value may hold: what tokens and keys are made of (letters, digits, ``-._~``, base64's
#: ``+/=``, ``:@`` of credentials); anything else (a space, a quote, ``%``, ``$``, a control character) could break
#: the header, or the proxy's configuration, it is put in
_VALUE = r"[A-Za-z0-9._~+/=:@-]+\Z"


def key_path() -> Path:
    """``~/.cci/secrets.key``: the user's key for placeholders (32 random bytes, hex; 0600, made on first use)."""
    from cci_core.layout import state_dir

    return state_dir() / "secrets.key"


def placeholder_key(path: Path | None = None) -> bytes:
    """The placeholder key, made atomically on first use (two processes making it at once agree on one)."""
    import os
    import secrets

    from cci_core.errors import CciError
    from cci_core.private_files import write_private

    path = path or key_path()
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            write_private(temporary, secrets.token_hex(32))
            try:
                os.link(temporary, path)  # fails if another process made it first: its key is the key
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
            continue
        except OSError as exc:
            raise CciError(f"cannot read the placeholder key {path}: {exc.strerror or exc}",
                           hint="remove it: cci makes a new one (running sessions then need a restart)") from None
        with os.fdopen(descriptor, "rb") as handle:
            key = handle.read(256).strip()
        if len(key) >= 32:
            return key
        raise CciError(f"the placeholder key {path} is too short", hint="remove it: cci makes a new one")
    raise AssertionError("unreachable")


def placeholder(name: str, value: str, prefix: str = DEFAULT_PREFIX, key: bytes | None = None) -> str:
    """The stand-in for ``value`` of secret ``name``: the same for the same user, name and value (a resumed or
    attached session keeps working), and telling nothing about the value."""
    import hashlib
    import hmac

    digest = hmac.new(key or placeholder_key(), f"{name}\0{value}".encode(), hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:32]}"


def check_config(config: Config, known: Mapping[str, SecretSpec]) -> None:
    """Reject ``[secrets]`` entries that can never work, whatever the network mode (:class:`ConfigError`)."""
    from cci_core.errors import ConfigError

    settings = config.secrets
    for table in ("hosts", "headers"):
        for name in getattr(settings, table):
            if name not in settings.env and name not in known:
                raise ConfigError(f"{name} is not in [secrets] env, nor a secret a plugin declares", key=f"secrets.{table}",
                                  hint=f'add it: [secrets] env = ["{name}"]')
    for name in settings.env:
        hosts = settings.hosts.get(name) or (known[name].hosts if name in known else ())
        if not hosts:
            raise ConfigError(f"{name} has no hosts it may be sent to", key="secrets.env",
                              hint=f'name them: [secrets] hosts = {{ {name} = ["api.example.com"] }}')
    for name, headers in settings.headers.items():
        if not headers:
            raise ConfigError(f"{name}: no header forms", key="secrets.headers",
                              hint=f'e.g. [secrets] headers = {{ {name} = ["Authorization: Bearer {{}}"] }}')
        for header in headers:
            problem = header_problem(header)
            if problem:
                raise ConfigError(f"{name}: {problem}", key="secrets.headers")


def check_secrets(config: Config, known: Mapping[str, SecretSpec], policy: NetworkPolicy) -> None:
    """Refuse ``[secrets]`` entries before anything is launched: malformed ones, and any under a plan without a
    proxy (the plan is made only when there are entries)."""
    check_config(config, known)
    if configured(config):
        plan = policy.plan(config.network)
        if plan is None or plan.proxy is None:
            raise _no_proxy(config)


def _no_proxy(config: Config) -> Exception:
    from cci_core.errors import ConfigError

    return ConfigError(f'[secrets] needs mode = "proxy" (or an allowlist with a pattern): the network mode '
                       f'{config.network.mode!r} has no proxy to put the real values in',
                       key="secrets.env", hint='set [network] mode = "proxy", or remove the [secrets] entries')


def configured(config: Config) -> bool:
    """Whether ``[secrets]`` names anything."""
    return bool(config.secrets.env or config.secrets.hosts or config.secrets.headers)


def collect_secrets(config: Config, known: Mapping[str, SecretSpec], plan: NetworkPlan | None, environ: Mapping[str, str],
                    tool: ToolAdapter | None = None, warn: Callable[[str], None] | None = None
                    ) -> list[Substitution]:
    """The secrets of one launch under ``plan``: the ``[secrets] env`` variables of the host, and what the tool's
    own credential files hold (:meth:`~cci_core.tool.ToolAdapter.credential_secrets`), each with its placeholder.
    ``known``: the secrets plugins declare, by name.

    Under a plan without a proxy: ``[secrets]`` entries are a :class:`ConfigError` (nothing could keep the values
    out of the container), and the tool's files are injected as they are (nothing is returned). ``warn`` hears of a
    named variable that is not set.
    """
    import re

    from cci_core.errors import ConfigError

    check_config(config, known)
    if plan is None or plan.proxy is None:
        if configured(config):
            raise _no_proxy(config)
        return []
    values: list[tuple[str, str]] = []  # the tool's first, then the variables (a later one of a name is the variable's)
    if tool is not None and config.defaults.inject_credentials:
        values += [(name, value) for name, value in tool.credential_secrets().items()
                   if name in known and value]
    for name in config.secrets.env:
        value = environ.get(name, "")
        if value:
            values.append((name, value))
        elif warn is not None:
            warn(f"[secrets] env names {name}, which is not set here: not passed")
    found = []
    key = placeholder_key() if values else b""
    for name, value in dict.fromkeys(values):
        if not re.match(_VALUE, value):
            raise ConfigError(f"the value of {name} has a character no token has (a space, a quote, a control "
                              "character...): not passed", key="secrets.env", hint=f"check {name} on the host")
        spec = known.get(name)
        hosts = tuple(config.secrets.hosts.get(name) or (spec.hosts if spec else ()))
        headers = tuple(config.secrets.headers.get(name) or (spec.headers if spec else DEFAULT_HEADERS))
        prefix = spec.placeholder_prefix if spec else DEFAULT_PREFIX
        found.append(Substitution(name, placeholder(name, value, prefix, key), value, hosts, headers))
    return found
