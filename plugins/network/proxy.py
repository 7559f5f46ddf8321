"""``proxy``: HTTP and HTTPS only, through a filtering proxy that allows and denies by host name.

The container reaches nothing directly; the driver runs a proxy for the plan, which lets a
request through when a rule of ``allowed_domains`` or of a preset matches the host it asks
for and no rule of ``denied_domains`` does (patterns: :mod:`.patterns`). The plan's own ACL
rules are the proxy's egress: the public internet, never private ranges, IPv6 or the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cci_core.api import (
    DEFAULT_PORTS,
    ConfigError,
    HostRule,
    NetworkConfig,
    NetworkPlan,
    NetworkPolicy,
    ProxySpec,
    Register,
    SecretSpec,
    hookimpl,
)
from cci_builtin_plugins.network import patterns
from cci_builtin_plugins.network.ranges import BLOCKED

if TYPE_CHECKING:
    from cci_core.api import Config, LaunchContext

_TRUST_KEY = "network.proxy_trust_ca"
#: the largest ``proxy_trust_ca`` file read (a bundle of a few hundred certificates)
MAX_TRUST_CA = 1 << 20
#: the plan setting holding the ``proxy_trust_ca`` certificates themselves (PEM text), for the driver
TRUST_CA_PEM = "proxy_trust_ca_pem"


class ProxyPolicy(NetworkPolicy):
    name = "proxy"
    summary = "HTTP(S) only, through a proxy allowing allowed_domains and presets by name (*.x patterns, ports)"

    def __init__(self, config: Config | None = None, presets: Mapping[str, tuple[str, ...]] | None = None) -> None:
        """``presets``: the preset name -> host patterns to know (default: those the running command's plugins
        registered)."""
        super().__init__(config)
        self._presets = presets

    @property
    def presets(self) -> Mapping[str, tuple[str, ...]]:
        """Preset name -> host patterns."""
        if self._presets is None:
            from cci_builtin_plugins.network.presets import registered_presets

            self._presets = registered_presets()
        return self._presets

    def validate(self, settings: NetworkConfig) -> None:
        self.rules(settings)
        host_map(settings.hosts)
        trust_ca(settings.proxy_trust_ca)
        if self.config is not None:  # the hosts secrets may be sent to are patterns of the same forms
            for name, hosts in self.config.secrets.hosts.items():
                for host in hosts:
                    patterns.parse_entry(host, key=f"secrets.hosts ({name})")

    def rules(self, settings: NetworkConfig) -> tuple[HostRule, ...]:
        """The plan's host rules: allows (``allowed_domains``, then each preset), then denials.

        A denial without a port covers every port an allow names, so that a denied name
        stays denied whatever port it is asked on.
        """
        allows = patterns.parse_entries(settings.allowed_domains, key="network.allowed_domains",
                                        source="allowed_domains")
        for name in dict.fromkeys(settings.presets):
            if name not in self.presets:
                known = ", ".join(sorted(self.presets)) or "none"
                raise ConfigError(f"unknown preset {name!r}; known: {known}", key="network.presets",
                                  hint="cci network presets lists them with their hosts")
            allows += patterns.parse_entries(self.presets[name], key=f"network.presets ({name})",
                                             source=f"preset {name}")
        if not allows:
            raise ConfigError("proxy mode needs at least one host to allow", key="network.allowed_domains",
                              hint='e.g. presets = ["claude-code"] or allowed_domains = ["api.github.com"]')
        denials = patterns.parse_entries(settings.denied_domains, key="network.denied_domains", action="deny",
                                         source="denied_domains")
        ports = sorted({*DEFAULT_PORTS, *(port for rule in allows for port in rule.ports)})
        if tuple(ports) != DEFAULT_PORTS:
            denials = [rule if rule.ports else rule._replace(ports=tuple(ports)) for rule in denials]
        return tuple(dict.fromkeys([*allows, *denials]))

    def plan(self, settings: NetworkConfig) -> NetworkPlan:
        rules = self.rules(settings)
        hosts = host_map(settings.hosts)
        pem = trust_ca(settings.proxy_trust_ca)
        return NetworkPlan(
            self.name,
            identity=identity(rules, hosts, pem),
            default="allow",
            rules=BLOCKED,
            settings={"mode": self.name, "allowed_domains": list(settings.allowed_domains),
                      "denied_domains": list(settings.denied_domains), "presets": list(settings.presets),
                      "hosts": dict(hosts), "proxy_trust_ca": settings.proxy_trust_ca, TRUST_CA_PEM: pem,
                      "proxy_image": settings.proxy_image},
            proxy=ProxySpec(rules, hosts),
        )


def identity(rules: tuple[HostRule, ...], hosts: Mapping[str, str], pem: str) -> str:
    """The canonical text of what a proxy enforces: equal configs (in any order) share one proxy."""
    import hashlib

    lines = sorted(f"{rule.action} {patterns.describe(rule)}" for rule in rules)
    lines += sorted(f"host {name}={address}" for name, address in hosts.items())
    if pem:
        lines.append(f"trust {hashlib.sha256(pem.encode()).hexdigest()[:16]}")
    return "\n".join(lines)


def host_map(hosts: Mapping[str, str]) -> dict[str, str]:
    """``[network] hosts`` checked and normalized (lower-case names, canonical addresses), sorted by name."""
    key = "network.hosts"
    result = {}
    for name, address in hosts.items():
        rule = patterns.parse_entry(name, key=key)
        if rule.pattern.startswith(("*", ".")) or rule.ports or patterns._ip(rule.pattern):
            raise ConfigError(f"{name!r} is not a plain host name", key=key,
                              hint='map exact names to addresses: { "api.example.com" = "203.0.113.7" }')
        text = address.strip().strip("[]")
        canonical = patterns._ip(text)
        if canonical is None:
            raise ConfigError(f"{name} = {address!r}: not an IP address", key=key,
                              hint='write an IPv4 or IPv6 address: { "api.example.com" = "203.0.113.7" }')
        problem = patterns.address_problem(canonical)
        if problem:
            raise ConfigError(f"{name} = {address!r}: {problem}", key=key,
                              hint="the proxy cannot reach such an address: remove the entry")
        result[rule.pattern] = canonical
    return dict(sorted(result.items()))


def trust_ca(path: str) -> str:
    """The PEM certificates of ``proxy_trust_ca`` (read on the host), or "" when none is set."""
    if not path.strip():
        return ""
    import base64
    import binascii
    from pathlib import Path

    file = Path(path).expanduser()
    try:
        if not file.is_file():
            raise ConfigError(f"{path}: {'is not a regular file' if file.exists() else 'does not exist'}",
                              key=_TRUST_KEY, hint="name a PEM file of CA certificates")
        with file.open("rb") as handle:
            data = handle.read(MAX_TRUST_CA + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}", key=_TRUST_KEY) from None
    if len(data) > MAX_TRUST_CA:
        raise ConfigError(f"{path}: larger than {MAX_TRUST_CA // 1024} KiB", key=_TRUST_KEY,
                          hint="name a PEM file of CA certificates")
    text = data.decode("ascii", errors="replace")
    if "PRIVATE KEY-----" in text:
        raise ConfigError(f"{path}: holds a private key", key=_TRUST_KEY,
                          hint="name a file of certificates only: the proxy needs no key of yours")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    certificates = []
    for part in text.split(begin)[1:]:
        body, found, _ = part.partition(end)
        try:
            if not found:
                raise ValueError("no END line")
            if not base64.b64decode("".join(body.split()), validate=True):
                raise ValueError("empty")
        except (ValueError, binascii.Error):
            raise ConfigError(f"{path}: a certificate in it is malformed", key=_TRUST_KEY,
                              hint="name a PEM file of CA certificates") from None
        certificates.append(f"{begin}{body}{end}\n")
    if not certificates:
        raise ConfigError(f"{path}: holds no PEM certificate ('-----BEGIN CERTIFICATE-----')", key=_TRUST_KEY,
                          hint="name a PEM file of CA certificates")
    return "".join(certificates)


#: the GitHub tokens gh and git read, sent to GitHub's API and git hosts only
GITHUB_SECRETS = tuple(
    SecretSpec(name, ("github.com", "api.github.com", "uploads.github.com"),
               ("Authorization: Bearer {}", "Authorization: token {}",
                "Authorization: Basic {basic:x-access-token}"),
               summary="a GitHub token (gh, git over HTTPS, the REST and GraphQL APIs)")
    for name in ("GH_TOKEN", "GITHUB_TOKEN")
)


@hookimpl
def cci_register(register: Register) -> None:
    from cci_builtin_plugins.network.presets import GITHUB, PACKAGE_REGISTRIES

    register.add_network_policy(ProxyPolicy)
    register.add_network_preset("github", GITHUB, "GitHub: the site, its API, git and release downloads")
    register.add_network_preset("package-registries", PACKAGE_REGISTRIES,
                                "npm, PyPI, crates.io, Go modules, Debian and Ubuntu archives")
    for spec in GITHUB_SECRETS:
        register.add_secret(spec)


@hookimpl
def cci_sandbox_brief(ctx: LaunchContext) -> list[str] | None:
    from cci_builtin_plugins.network import brief

    return [brief.proxy(ctx.network_plan)] if brief.policy_in_force(ctx) == "proxy" else None
