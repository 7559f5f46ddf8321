"""Secrets by placeholder: the container holds a stand-in, the network policy's proxy sends the real value.

A plugin declares what it knows with ``register.add_secret(SecretSpec(...))`` (the Claude
Code adapter: ``ANTHROPIC_API_KEY``; the network plugin: ``GH_TOKEN``, ``GITHUB_TOKEN``); the
user names the host variables to pass in ``[secrets]``. At a launch under a plan with a
proxy, each becomes a :class:`Substitution`: the container's variable holds
:attr:`Substitution.placeholder`, and the driver's proxy puts the real value in its place in
request headers to the secret's hosts only (:meth:`cci_core.driver.Driver.route_secrets`).
"""

from __future__ import annotations

from typing import NamedTuple


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
    return None
