"""The proxy mode: host patterns, presets, the plan it asks the driver for, and its bad input.

Enforcement (squid in a proxy container, test hosts in network namespaces) is tested in
tests/integration/test_proxy_egress.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_core.config.schema import NetworkConfig
from cci_core.errors import ConfigError
from cci_core.network_policy import HostRule, ProxySpec
from cci_core.networking import settings_of
from cci_builtin_plugins.network import patterns
from cci_builtin_plugins.network.allowlist import AllowlistPolicy
from cci_builtin_plugins.network.presets import GITHUB, PACKAGE_REGISTRIES
from cci_builtin_plugins.network.proxy import TRUST_CA_PEM, ProxyPolicy
from cci_builtin_plugins.network.ranges import BLOCKED

PRESETS = {"github": GITHUB, "package-registries": PACKAGE_REGISTRIES, "tiny": ("one.example.com",)}


def proxy(**settings: object) -> NetworkConfig:
    return NetworkConfig(mode="proxy", **settings)  # type: ignore[arg-type]


def policy() -> ProxyPolicy:
    return ProxyPolicy(None, presets=PRESETS)


# --- patterns -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "pattern", "ports"), [
    ("api.github.com", "api.github.com", ()),
    ("API.GitHub.com.", "api.github.com", ()),
    ("*.example.com", "*.example.com", ()),
    (".example.com", ".example.com", ()),
    ("example.com:8443", "example.com", (8443,)),
    ("*.example.com:80", "*.example.com", (80,)),
    ("198.51.100.7", "198.51.100.7", ()),
    ("198.51.100.7:8080", "198.51.100.7", (8080,)),
    ("[2001:db8::1]", "2001:db8::1", ()),
    ("[2001:DB8:0::1]:443", "2001:db8::1", (443,)),
    ("  xn--bcher-kva.example ", "xn--bcher-kva.example", ()),
])
def test_entries_are_normalized(entry: str, pattern: str, ports: tuple[int, ...]) -> None:
    assert patterns.parse_entry(entry, key="k") == HostRule("allow", pattern, ports, "")


@pytest.mark.parametrize(("entry", "says"), [
    ("*.", "names no domain"),
    ("*", "a bare '*' would allow every host"),
    (".", "names no domain"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("*foo.com", "'*' that is not a whole first label"),
    ("foo.*.com", "'*' that is not a whole first label"),
    ("*.*.example.com", "'*' that is not a whole first label"),
    ("https://api.github.com", "has a scheme"),
    ("api.github.com/repos", "is not a host name"),
    ("user@api.github.com", "is not a host name"),
    ("example.com:0", "the port 0 is out of range"),
    ("example.com:65536", "the port 65536 is out of range"),
    ("example.com:https", "the port 'https' is not a number"),
    ("example.com:", "the port '' is not a number"),
    ("2001:db8::1", "has more than one ':'"),
    ("[example.com]", "is not an IPv6 address"),
    ("[2001:db8::1", "without a closing ']'"),
    ("localhost", "not a fully qualified name"),
    ("*.com", "not a fully qualified name"),
    ("my_host.example.com", "the label 'my_host'"),
    ("-bad.example.com", "the label '-bad'"),
    ("a..example.com", "an empty label"),
    (f"{'a' * 64}.example.com", "label longer than 63"),
    (".".join(["abcdefghi"] * 26) + ".com", "longer than 253"),
    ("bücher.example", "xn-- form"),
    ("10.1.2.3", "private range"),
    ("127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"),
    ("224.0.0.1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("1.2.3", "not a valid IPv4 address"),
    ("[::1]", "loopback"),
    ("[fe80::1]", "link-local"),
    ("[fd00::1]", "unique-local"),
    ("[ff02::1]", "multicast"),
    ("[::ffff:10.0.0.1]", "private range"),
])
def test_malformed_entries_are_one_line_naming_the_key_and_entry(entry: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        patterns.parse_entry(entry, key="network.allowed_domains")
    message = str(caught.value)
    assert says in message
    assert message.startswith("network.allowed_domains: ")
    assert repr(entry) in message or repr(entry.strip()) in message or entry.strip() == ""
    assert "\n" not in message


@pytest.mark.parametrize(("pattern", "host", "matches"), [
    ("api.github.com", "api.github.com", True),
    ("api.github.com", "API.GITHUB.COM.", True),
    ("api.github.com", "x.api.github.com", False),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "badexample.com", False),
    (".example.com", "example.com", True),
    (".example.com", "a.example.com", True),
    (".example.com", "notexample.com", False),
    ("198.51.100.7", "198.51.100.7", True),
    ("2001:db8::1", "[2001:db8:0:0::1]", True),
])
def test_pattern_matching(pattern: str, host: str, matches: bool) -> None:
    assert patterns.pattern_matches(pattern, patterns.normalize_host(host)) is matches


def test_a_denial_wins_whatever_the_order_and_the_deciding_rule_is_returned() -> None:
    deny = HostRule("deny", "evil.example.com", (), "denied_domains")
    allow = HostRule("allow", "*.example.com", (), "allowed_domains")
    assert patterns.decide([allow, deny], "evil.example.com", 443) == deny
    assert patterns.decide([deny, allow], "good.example.com", 443) == allow
    assert patterns.decide([deny, allow], "good.example.com", 22) is None
    assert patterns.decide([deny, allow], "other.org", 443) is None


# --- the plan -------------------------------------------------------------------------------------------------


def test_the_plan_is_the_proxys_egress_and_its_host_rules() -> None:
    settings = proxy(allowed_domains=["api.github.com", "*.example.com:8443"], denied_domains=["bad.example.com"],
                     presets=["tiny"], hosts={"Test.Example.com": "198.51.100.9"})
    plan = policy().plan(settings)
    assert plan.policy == "proxy"
    assert plan.default == "allow"
    assert plan.rules == BLOCKED
    assert plan.refresh_minutes == 0
    assert plan.proxy == ProxySpec((
        HostRule("allow", "api.github.com", (), "allowed_domains"),
        HostRule("allow", "*.example.com", (8443,), "allowed_domains"),
        HostRule("allow", "one.example.com", (), "preset tiny"),
        HostRule("deny", "bad.example.com", (80, 443, 8443), "denied_domains"),  # every port an allow names
    ), {"test.example.com": "198.51.100.9"})
    assert plan.settings["mode"] == "proxy"
    assert settings_of(plan) == settings._replace(hosts={"test.example.com": "198.51.100.9"})
    assert plan.key.startswith("pr-")


def test_a_denial_without_a_port_stays_as_written_when_every_allow_uses_the_default_ports() -> None:
    plan = policy().plan(proxy(allowed_domains=[".example.com"], denied_domains=["bad.example.com"]))
    assert plan.proxy is not None
    assert plan.proxy.rules[-1] == HostRule("deny", "bad.example.com", (), "denied_domains")


def test_equal_configs_share_one_identity_whatever_their_order() -> None:
    one = policy().plan(proxy(allowed_domains=["a.example.com", "b.example.com"], hosts={"a.example.com": "1.1.1.1"}))
    two = policy().plan(proxy(allowed_domains=["B.example.com", "a.example.com", "a.example.com"],
                              hosts={"A.example.com": "1.1.1.1"}))
    three = policy().plan(proxy(allowed_domains=["a.example.com", "b.example.com"], hosts={"a.example.com": "1.1.1.2"}))
    assert one.identity == two.identity and one.key == two.key
    assert three.key != one.key


def test_presets_expand_and_an_unknown_one_lists_the_known() -> None:
    plan = policy().plan(proxy(presets=["github"]))
    assert plan.proxy is not None
    assert {rule.pattern for rule in plan.proxy.rules} == set(GITHUB)
    assert all(rule.source == "preset github" for rule in plan.proxy.rules)
    with pytest.raises(ConfigError, match=r"network.presets: unknown preset 'gitlab'; known: github, "
                                          r"package-registries, tiny"):
        policy().validate(proxy(presets=["gitlab"]))


def test_every_builtin_preset_parses() -> None:
    for name in PRESETS:
        policy().validate(proxy(presets=[name]))


def test_proxy_mode_needs_a_host_to_allow() -> None:
    with pytest.raises(ConfigError, match='needs at least one host to allow.*presets = \\["claude-code"\\]'):
        policy().validate(proxy(denied_domains=["x.example.com"]))


@pytest.mark.parametrize(("hosts", "says"), [
    ({"*.example.com": "198.51.100.1"}, "not a plain host name"),
    ({"a.example.com:80": "198.51.100.1"}, "not a plain host name"),
    ({"a.example.com": "nowhere"}, "not an IP address"),
    ({"a.example.com": "10.0.0.1"}, "private range"),
    ({"a.example.com": "127.0.0.1"}, "loopback"),
    ({"a.example.com": "fe80::1"}, "link-local"),
    ({"localhost": "198.51.100.1"}, "not a fully qualified name"),
])
def test_a_bad_host_map_is_refused(hosts: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=f"network.hosts: .*{says}"):
        policy().validate(proxy(allowed_domains=["a.example.com"], hosts=hosts))


CERTIFICATE = """-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUJ7Dd0ZrwVq4wNQ2mR8GvjbFzmdUwCgYIKoZIzj0EAwIw
ETEPMA0GA1UEAwwGdGVzdGNhMB4XDTI0MDEwMTAwMDAwMFoXDTM0MDEwMTAwMDAw
MFowETEPMA0GA1UEAwwGdGVzdGNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
-----END CERTIFICATE-----
"""


def test_the_trust_ca_is_read_on_the_host_into_the_plan(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(f"a comment\n{CERTIFICATE}")
    plan = policy().plan(proxy(allowed_domains=["a.example.com"], proxy_trust_ca=str(ca)))
    assert plan.settings[TRUST_CA_PEM] == CERTIFICATE
    other = policy().plan(proxy(allowed_domains=["a.example.com"]))
    assert plan.settings["proxy_trust_ca"] == str(ca) and other.settings[TRUST_CA_PEM] == ""
    assert plan.key != other.key


@pytest.mark.parametrize(("content", "says"), [
    (None, "does not exist"),
    ("not a certificate\n", "holds no PEM certificate"),
    ("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "malformed"),
    ("-----BEGIN CERTIFICATE-----\nAAAA\n", "malformed"),
    (CERTIFICATE + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "private key"),
])
def test_a_bad_trust_ca_is_refused(tmp_path: Path, content: str | None, says: str) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    with pytest.raises(ConfigError, match=f"network.proxy_trust_ca: {ca}: .*{says}"):
        policy().validate(proxy(allowed_domains=["a.example.com"], proxy_trust_ca=str(ca)))


def test_a_directory_is_no_trust_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a regular file"):
        policy().validate(proxy(allowed_domains=["a.example.com"], proxy_trust_ca=str(tmp_path)))


# --- allowlist through the proxy ------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    NetworkConfig(mode="allowlist", allowed_domains=["api.github.com", "*.githubusercontent.com"]),
    NetworkConfig(mode="allowlist", allowed_domains=[".example.com"]),
    NetworkConfig(mode="allowlist", allowed_domains=["example.com:8443"]),
    NetworkConfig(mode="allowlist", allowed_domains=["[2001:db8::1]"]),
    NetworkConfig(mode="allowlist", allowed_domains=["example.com"], denied_domains=["x.example.com"]),
    NetworkConfig(mode="allowlist", presets=["github"]),
])
def test_allowlist_with_a_pattern_a_port_or_proxy_keys_is_the_proxy_plan(settings: NetworkConfig) -> None:
    allowlist = AllowlistPolicy()
    allowlist._proxy = policy  # type: ignore[method-assign]  # (with this file's presets)
    allowlist.validate(settings)
    plan = allowlist.plan(settings)
    assert plan.policy == "proxy" and plan.settings["mode"] == "proxy" and plan.proxy is not None
    assert plan == policy().plan(settings)


def test_plain_allowlist_entries_keep_the_acl_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    from cci_builtin_plugins.network import resolver

    monkeypatch.setattr(resolver, "resolve_names", lambda names: resolver.Resolution({n: () for n in names}, []))
    plan = AllowlistPolicy().plan(NetworkConfig(mode="allowlist", allowed_domains=["api.github.com", "1.1.1.1"]))
    assert plan.policy == "allowlist" and plan.proxy is None


def test_cci_network_presets_lists_them_with_their_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from click.testing import CliRunner

    from cci_core.cli.main import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["network", "presets", "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    presets = {item["name"]: item for item in json.loads(result.output)}
    assert presets["github"]["hosts"] == list(GITHUB) and presets["github"]["plugin"] == "network-proxy"
    assert presets["claude-code"]["hosts"] == ["api.anthropic.com", "claude.ai", "platform.claude.com"]
    assert presets["claude-code"]["plugin"] == "claude"
    table = CliRunner().invoke(cli, ["network", "presets"], catch_exceptions=False).output
    assert table.splitlines()[0].split() == ["NAME", "SUMMARY", "HOSTS"]
    assert "registry.npmjs.org, pypi.org" in table


def test_a_proxy_plan_through_the_command_line_finds_the_registered_presets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from click.testing import CliRunner

    from cci_core.cli.main import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("cci_builtin_plugins.incus.driver.IncusDriver.policy_networks", lambda self: [])  # no Incus
    result = CliRunner().invoke(cli, ["--network", "proxy", "network", "show", "--format", "json"],
                                env={"CCI_NETWORK_PRESETS": "claude-code,github"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "preset claude-code" in result.output and "preset github" in result.output
    assert json.loads(result.output)["policy"] == "proxy"
