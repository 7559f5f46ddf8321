"""Host patterns of the proxy mode: parsing ``allowed_domains`` / ``denied_domains`` entries, and matching them.

An entry is one of:

- ``api.github.com``: exactly that name;
- ``*.example.com``: its subdomains only (``a.example.com``, ``a.b.example.com``, not ``example.com``);
- ``.example.com``: the name and all its subdomains;
- ``198.51.100.7`` or ``[2001:db8::1]``: that address;

each optionally followed by ``:PORT`` (``example.com:8443``); without a port it covers
:data:`~cci_core.api.DEFAULT_PORTS` (80 and 443). Denials win over allows. The proxy
(squid) does the matching at run time; :func:`decide` is the reference its rendering is
checked against, and what ``cci network show`` explains a name with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from cci_core.api import DEFAULT_PORTS, ConfigError, HostRule
from cci_builtin_plugins.network.ranges import is_private

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z"  # compiled on first use (re caches it)
_FORMS = ("write 'api.github.com' (that name), '*.example.com' (its subdomains), '.example.com' (it and its "
          "subdomains), an IPv4 address or an IPv6 address in brackets, optionally with ':PORT'")


def _bad(key: str, entry: str, problem: str, hint: str = _FORMS) -> ConfigError:
    return ConfigError(f"{entry!r}: {problem}", key=key, hint=hint)


def name_problem(name: str) -> str | None:
    """Why ``name`` (lower case, no trailing dot) is not a fully qualified host name, or None."""
    if not name.isascii():
        return "has characters other than ASCII letters, digits, '-' and '.' (write an international name in " \
               "its xn-- form)"
    labels = name.split(".")
    if len(labels) < 2:
        return "is not a fully qualified name (it needs a dot: 'example.com')"
    if len(name) > 253:
        return "is longer than 253 characters"
    for label in labels:
        if len(label) > 63:
            return f"has a label longer than 63 characters ({label[:20]}...)"
        if not re.match(_LABEL, label):
            return ("has an empty label" if not label else
                    f"has the label {label!r}: a label is letters, digits and '-', not at its start or end")
    if labels[-1].isdigit():
        return "ends in a numeric label (an address? write all four parts)"
    return None


def address_problem(address: str, mode: str = "the proxy") -> str | None:
    """Why an IP address (IPv4, or IPv6 without brackets) can never be a destination worth allowing, or None.

    ``mode`` names the network mode that blocks private ranges in the message.
    """
    import ipaddress

    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return address_problem(str(ip.ipv4_mapped), mode)
    checks = (("the unspecified address", ip.is_unspecified), ("a loopback address", ip.is_loopback),
              ("a link-local address", ip.is_link_local), ("a multicast address", ip.is_multicast),
              ("the broadcast address", address == "255.255.255.255"))
    for what, flag in checks:
        if flag:
            return f"{address} is {what}"
    if isinstance(ip, ipaddress.IPv4Address) and is_private(address):
        return f"{address} is in a private range, which {mode} mode always blocks"
    if isinstance(ip, ipaddress.IPv6Address) and (ip in ipaddress.IPv6Network("fc00::/7") or ip.is_site_local):
        return f"{address} is a unique-local (private) IPv6 address, which {mode} mode always blocks"
    return None


def _ip(text: str) -> str | None:
    """``text`` as a canonical IP address (IPv6 compressed), or None if it is none."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _split_port(key: str, entry: str, text: str) -> tuple[str, tuple[int, ...]]:
    """``host[:port]`` (``[v6]:port`` for IPv6) as the host part and its ports."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise _bad(key, entry, "has '[' without a closing ']'")
        if _ip(host) is None or ":" not in host:
            raise _bad(key, entry, f"{host!r} in brackets is not an IPv6 address")
        if rest and not rest.startswith(":"):
            raise _bad(key, entry, "has something other than ':PORT' after the ']'")
        port_text = rest[1:] if rest else None
        host = f"[{host}]"
    elif text.count(":") > 1:
        hint = f"write an IPv6 address in brackets: '[{text}]'" if _ip(text) else _FORMS
        raise _bad(key, entry, "has more than one ':'", hint)
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
    if port_text is None:
        return host, ()
    if not port_text.isdigit() or not port_text.isascii():
        raise _bad(key, entry, f"the port {port_text!r} is not a number", "write a port from 1 to 65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise _bad(key, entry, f"the port {port} is out of range", "write a port from 1 to 65535")
    return host, (port,)


Action = Literal["allow", "deny"]


def parse_entry(entry: str, *, key: str, action: Action = "allow", source: str = "") -> HostRule:
    """One entry as a :class:`HostRule` (pattern normalized: lower case, no trailing dot, IPv6 without brackets).

    Anything else is a :class:`ConfigError` naming ``key`` and the entry, with a hint.
    """
    if not isinstance(entry, str) or not entry.strip():
        raise _bad(key, str(entry), "is empty")
    text = entry.strip().lower()
    if "://" in text:
        raise _bad(key, entry, "has a scheme", "write the host name alone: 'api.github.com', not 'https://...'")
    if any(char in text for char in "/?#@ \t"):
        raise _bad(key, entry, "is not a host name (it has a path, a query, user info or a space)",
                   "write the host name alone: 'api.github.com', not a URL")
    host, ports = _split_port(key, entry, text)
    if host.startswith("["):
        address = _ip(host[1:-1])
        assert address is not None
        problem = address_problem(address)
        if problem:
            raise _bad(key, entry, problem, "remove it")
        return HostRule(action, address, ports, source)
    host = host[:-1] if host.endswith(".") and host not in (".", "*.") else host
    if host == "*":
        raise _bad(key, entry, "a bare '*' would allow every host",
                   "name the hosts; for the whole internet use mode = \"restricted\"")
    if re.match(r"[0-9.]*[0-9][0-9.]*\Z", host):
        if _ip(host) is None:
            raise _bad(key, entry, "is not a valid IPv4 address")
        problem = address_problem(host)
        if problem:
            raise _bad(key, entry, problem, "remove it")
        return HostRule(action, host, ports, source)
    if host.startswith("*."):
        base, prefix = host[2:], "*."
    elif host.startswith("."):
        base, prefix = host[1:], "."
    else:
        base, prefix = host, ""
    if "*" in base:
        raise _bad(key, entry, "has a '*' that is not a whole first label ('*.example.com')")
    if not base:
        raise _bad(key, entry, "names no domain")
    problem = name_problem(base)
    if problem:
        raise _bad(key, entry, f"{base!r} {problem}" if prefix else problem)
    return HostRule(action, prefix + base, ports, source)


def parse_entries(entries: Iterable[str], *, key: str, action: Action = "allow", source: str = "") -> list[HostRule]:
    """Every entry of a list, parsed; duplicates (same pattern and ports) kept once, in their order."""
    return list(dict.fromkeys(parse_entry(entry, key=key, action=action, source=source) for entry in entries))


def normalize_host(host: str) -> str:
    """A host as a request names it, in the form patterns are written in: lower case, no trailing dot or brackets."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return _ip(host) or host


def pattern_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` (normalized) is one ``pattern`` covers; wildcards never cover an address."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and _ip(host) is None
    if pattern.startswith("."):
        return (host == pattern[1:] or host.endswith(pattern)) and _ip(host) is None
    return host == pattern


def rule_matches(rule: HostRule, host: str, port: int) -> bool:
    """Whether ``rule`` covers a request to ``host`` on ``port``."""
    return port in (rule.ports or DEFAULT_PORTS) and pattern_matches(rule.pattern, normalize_host(host))


def decide(rules: Iterable[HostRule], host: str, port: int) -> HostRule | None:
    """The rule deciding a request to ``host:port``: the first matching denial, else the first matching allow.

    None: no rule matches, and the request is denied.
    """
    matching = [rule for rule in rules if rule_matches(rule, host, port)]
    return next((rule for rule in matching if rule.action == "deny"), None) or (matching[0] if matching else None)


def describe(rule: HostRule) -> str:
    """A rule as written (``*.example.com:8443``, ``[2001:db8::1]``), with where it came from."""
    pattern = f"[{rule.pattern}]" if ":" in rule.pattern else rule.pattern
    ports = ",".join(str(port) for port in rule.ports)
    written = f"{pattern}:{ports}" if ports else pattern
    return f"{written} ({rule.source})" if rule.source else written
