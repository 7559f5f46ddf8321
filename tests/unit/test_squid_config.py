"""The squid configuration of a proxy plan: host rules, ports, addresses, the SNI check, secrets (no squid here)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from cci_builtin_plugins.incus import squid
from cci_core.api import HostRule, ProxySpec, Substitution, UsageError

GITHUB = HostRule("allow", "api.github.com", source="preset github")


def conf(*rules: HostRule, substitutions: tuple[Substitution, ...] = (), **hosts: str) -> str:
    return squid.render(ProxySpec(rules, hosts), substitutions)[squid.SQUID_CONF][0].decode()


def acl_values(text: str, name: str) -> list[list[str]]:
    """The words after ``acl NAME TYPE`` of each line defining ``name``: [type, value...]."""
    return [line.split()[2:] for line in text.splitlines() if line.startswith(f"acl {name} ")]


def access(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("http_access ")]


def posix(regex: str) -> re.Pattern[str]:
    """A squid (POSIX extended) pattern of this module as a Python one."""
    python = regex.replace("[[:space:]]", r"\s").replace("[[]", r"\[").replace("[]]", r"\]")
    return re.compile(python, re.IGNORECASE)


class Squid:
    """squid's access lists of a rendered configuration, evaluated with the ACLs named in ``facts`` matching (those
    of the host rules, ``CONNECT``...); annotations always match and note what they say, ``note`` ACLs read them."""

    def __init__(self, text: str, *facts: str) -> None:
        self.lines = text.splitlines()
        self.facts = {"all", *facts}
        self.notes: dict[str, str] = {}
        self.kinds = {line.split()[1]: line.split()[2:] for line in self.lines if line.startswith("acl ")}

    def matches(self, name: str) -> bool:
        if name.startswith("!"):
            return not self.matches(name[1:])
        kind, *values = self.kinds.get(name, ["fact"])
        if kind.startswith("annotate_"):
            key, _, value = values[0].partition("=")
            self.notes[key] = value
            return True
        if kind == "note":
            return self.notes.get(values[0]) == values[1]
        if kind in ("any-of", "all-of"):
            return (any if kind == "any-of" else all)(self.matches(value) for value in values)
        return name in self.facts

    def check(self, directive: str) -> str | None:
        """The action of the first ``directive`` line whose ACLs all match (None: no line matched)."""
        for line in self.lines:
            words = line.split()
            if words[:1] == [directive] and all(self.matches(acl) for acl in words[2:]):
                return words[1]
        return None

    def answer(self) -> str:
        """How squid answers the request: "allow", "deny" (to the request itself, before any TLS), or "bumped
        deny" (squid accepts a CONNECT and refuses inside TLS, which it does for a refused CONNECT unless the URL
        rewriter redirected it)."""
        if self.check("http_access") != "allow":
            return "bumped deny" if "CONNECT" in self.facts else "deny"
        redirected = self.check("url_rewrite_access") == "allow"
        if self.check("adapted_http_access") == "allow":
            return "allow"
        return "deny" if redirected or "CONNECT" not in self.facts else "bumped deny"


def note(text: str, acl: str) -> str:
    (values,) = acl_values(text, acl)
    assert values[0] == "annotate_transaction" and values[1].startswith("rule=")
    return unquote(values[1].removeprefix("rule="))


def test_an_exact_name_matches_that_name_only() -> None:
    text = conf(GITHUB)
    assert acl_values(text, "cci_rule1") == [["dstdomain", "-n", "api.github.com"]]
    assert acl_values(text, "cci_rule1_ports") == [["port", "80", "443"]]
    assert note(text, "cci_rule1_note") == "allow api.github.com (preset github)"
    assert "http_access allow cci_rule1 cci_rule1_ports cci_rule1_note" in access(text)


def test_a_leading_dot_matches_the_name_and_its_subdomains() -> None:
    assert acl_values(conf(HostRule("allow", ".Example.com")), "cci_rule1") == [["dstdomain", "-n", ".example.com"]]


def test_a_star_matches_subdomains_only() -> None:
    ((kind, *flags, regex),) = acl_values(conf(HostRule("allow", "*.example.com")), "cci_rule1")
    assert (kind, flags) == ("dstdom_regex", ["-n", "-i"])
    pattern = posix(regex)
    assert pattern.search("a.example.com") and pattern.search("x.y.EXAMPLE.com")
    assert not pattern.search("example.com") and not pattern.search("badexample.com")
    assert not pattern.search("a.example.com.evil.test") and not pattern.search("a.exampleXcom")


def test_ports_replace_the_defaults() -> None:
    text = conf(HostRule("allow", "example.com", (8443, 22)))
    assert acl_values(text, "cci_rule1_ports") == [["port", "8443", "22"]]
    assert note(text, "cci_rule1_note") == "allow example.com:8443,22"


def test_a_name_never_matches_a_request_for_an_address() -> None:
    """Without -n squid looks up the name of a requested address (the hosts map, or a PTR record its owner
    writes: api.github.com for any address) and a name rule allowed a request for that bare address."""
    text = squid.render(ProxySpec((GITHUB, HostRule("allow", "*.example.com"), HostRule("deny", ".bad.test")),
                                  {"api.github.com": "198.51.100.7"}),
                        (TOKEN,))
    lines = [line for content, _mode in text.values() for line in content.decode(errors="replace").splitlines()]
    name_acls = [line.split() for line in lines if line.startswith("acl ") and line.split()[2] in
                 ("dstdomain", "dstdom_regex")]
    assert len(name_acls) >= 6 and all("-n" in words[3:-1] for words in name_acls), name_acls


@pytest.mark.parametrize(("pattern", "address"), [("198.51.100.2", "198.51.100.2"),
                                                   ("[2001:DB8::1]", "2001:db8::1"), ("2001:db8::1", "2001:db8::1")])
def test_an_address_matches_requests_to_that_address_written_as_one(pattern: str, address: str) -> None:
    text = conf(HostRule("allow", pattern))
    assert acl_values(text, "cci_rule1_address") == [["dst", address]]
    ((kind, flag, regex),) = acl_values(text, "cci_rule1_literal")
    assert (kind, flag) == ("dstdom_regex", "-n")  # -n: no reverse lookup; a name never resolves into a match
    literal = posix(regex)
    assert literal.search("198.51.100.2") and literal.search("[2001:db8::1]") and literal.search("2001:db8::1")
    assert not literal.search("example.com") and not literal.search("198.51.100.2.nip.io")
    assert acl_values(text, "cci_rule1") == [["all-of", "cci_rule1_literal", "cci_rule1_address"]]


def test_denials_come_first_and_what_no_rule_allows_is_denied() -> None:
    text = conf(HostRule("allow", ".example.com"), HostRule("deny", "bad.example.com", source="denied_domains"),
                GITHUB)
    assert acl_values(text, "cci_rule1") == [["dstdomain", "-n", "bad.example.com"]]
    assert note(text, "cci_rule1_note") == "deny bad.example.com (denied_domains)"
    assert note(text, "cci_no_rule") == "no rule"
    for method in ((), ("CONNECT",)):
        ports = ("cci_rule1_ports", "cci_rule2_ports", "cci_rule3_ports")
        denied = Squid(text, *method, "cci_rule1", "cci_rule2", *ports)  # bad.example.com: under both rules
        assert denied.answer() == "deny" and denied.notes["rule"] == "deny%20bad.example.com%20%28denied_domains%29"
        allowed = Squid(text, *method, "cci_rule2", *ports)
        assert allowed.answer() == "allow" and unquote(allowed.notes["rule"]) == "allow .example.com"
        nothing = Squid(text, *method, *ports)
        assert nothing.answer() == "deny" and unquote(nothing.notes["rule"]) == "no rule"
        wrong_port = Squid(text, *method, "cci_rule2")
        assert wrong_port.answer() == "deny" and unquote(wrong_port.notes["rule"]) == "no rule"


def test_a_refused_connect_is_answered_403_before_any_tls(tmp_path: Path) -> None:
    """On the ssl-bump port squid would accept a CONNECT it refuses and send its 403 over TLS with a certificate of
    its own (Python 3.13 refuses it: "Missing Authority Key Identifier"); a redirected CONNECT it does not bump."""
    files = squid.render(ProxySpec((GITHUB, HostRule("deny", ".bad.test"))), ())
    text = files[squid.SQUID_CONF][0].decode()
    for facts in [("CONNECT",), ("CONNECT", "cci_rule1", "cci_rule1_ports"), ("CONNECT", "cci_rule2"),
                  ("CONNECT", "cci_ip_literal", "cci_private", "cci_rule2", "cci_rule2_ports")]:
        refused = Squid(text, *facts)
        assert refused.answer() == "deny" and refused.notes["cci_refused"] == "yes", facts
    allowed = Squid(text, "CONNECT", "cci_rule2", "cci_rule2_ports")
    assert allowed.answer() == "allow" and allowed.check("url_rewrite_access") != "allow"  # the helper: refusals only
    assert f"url_rewrite_program {squid.REFUSE_HELPER}" in text.splitlines()
    helper = tmp_path / "refuse"
    helper.write_bytes(files[squid.REFUSE_HELPER][0])
    helper.chmod(files[squid.REFUSE_HELPER][1])
    answers = subprocess.run([str(helper)], input="a.test:443 127.0.0.1/127.0.0.1 - CONNECT\nx y\n",
                             capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
    assert len(answers) == 2 and all(re.fullmatch(r"OK status=30[1278] url=\S+", line) for line in answers), answers


def test_a_denial_s_page_names_cci_s_policy() -> None:
    files = squid.render(ProxySpec((GITHUB,)), ())
    lines = files[squid.SQUID_CONF][0].decode().splitlines()
    assert {f"deny_info {squid.DENIED_PAGE_NAME} cci_refuse", f"deny_info {squid.DENIED_PAGE_NAME} cci_refused"} <= \
        set(lines)
    # every deny line ends with the ACL the page is for (squid picks the page of the last ACL it checked)
    assert all(line.split()[-1] in ("cci_refuse", "cci_refused") for line in lines
               if line.startswith(("http_access deny", "adapted_http_access deny")))
    page = files[squid.DENIED_PAGE][0].decode()
    assert squid.DENIED_PAGE.endswith(f"/{squid.DENIED_PAGE_NAME}") and "network policy" in page
    assert re.findall(r"%.", page) == ["%M", "%H", "%p"]  # squid's codes: nothing else starts with %


def test_the_proxy_listens_on_the_loopback_only_and_keeps_nothing_and_tells_nothing() -> None:
    text = conf(GITHUB)
    ports = [line for line in text.splitlines() if line.startswith(("http_port", "https_port"))]
    assert len(ports) == 1 and ports[0].startswith(f"http_port 127.0.0.1:{squid.LISTEN_PORT} ssl-bump ")
    assert f"tls-cert={squid.CA_CERT}" in ports[0] and f"tls-key={squid.CA_KEY}" in ports[0]
    for line in ("cache deny all", "forwarded_for delete", "via off", "shutdown_lifetime 1 seconds",
                 "pinger_enable off", "on_unsupported_protocol respond all", "visible_hostname cci-proxy",
                 f"pid_filename {squid.PID_FILE}",
                 f"access_log stdio:{squid.ACCESS_LOG} cci_json", f"hosts_file {squid.HOSTS_FILE}",
                 f"include {squid.SECRETS_CONF}", "http_access deny manager cci_no_rule cci_refuse"):
        assert line in text.splitlines()
    assert "dns_nameservers" not in text  # the container's resolv.conf
    assert "tls_outgoing_options" not in text.replace("# tls_outgoing_options", "")


def test_a_server_name_other_than_the_connect_s_is_terminated_and_nothing_is_bumped_without_secrets() -> None:
    lines = conf(GITHUB).splitlines()
    bump = [line for line in lines if line.startswith("ssl_bump ")]
    assert bump == ["ssl_bump peek step1", "ssl_bump terminate step2 !cci_sni_ok cci_sni_mismatch",
                    "ssl_bump splice all"]
    (check,) = [line.split() for line in lines if line.startswith("external_acl_type cci_sni_check ")]
    assert check[-3:] == ["%ssl::>sni", "%>rd", squid.SNI_HELPER]
    # its answer depends on those two values only: a yes is kept, so that a new connection to a name seen asks no
    # helper; a no (a server name the agent made up, of up to 64 kB) is not, and the kept ones are bounded
    options = dict(word.split("=", 1) for word in check[2:-3])
    assert int(options["ttl"]) >= 600 and options["negative_ttl"] == "0", options
    assert 0 < int(options["cache"]) <= 10000, options


def test_the_sni_helper_wants_the_requested_name_or_no_name_for_an_address(tmp_path: Path) -> None:
    helper = tmp_path / "sni-check"
    content, mode = squid.render(ProxySpec((GITHUB,)), ())[squid.SNI_HELPER]
    helper.write_bytes(content)
    helper.chmod(mode)
    cases = {"api.github.com api.github.com": "OK", "API.GitHub.com api.github.com": "OK",
             "evil.test api.github.com": "ERR", "- api.github.com": "ERR", "- 198.51.100.2": "OK",
             "- 2001:db8::1": "OK", "- [2001:db8::1]": "OK", "api.github.com 198.51.100.2": "ERR",
             "api.github.com%00 api.github.com": "ERR", "api%2Egithub.com api.github.com": "OK", "- -": "ERR",
             "": "ERR", "x": "ERR"}
    result = subprocess.run([str(helper)], input="".join(f"{line}\n" for line in cases), capture_output=True,
                            text=True, check=True, timeout=30)
    assert result.stdout.splitlines() == list(cases.values())


def test_the_hosts_map_is_the_proxy_s_hosts_file() -> None:
    files = squid.render(ProxySpec((GITHUB,), {"API.Example.com": "198.51.100.7", "v6.example.com": "2001:db8::7"}),
                         ())
    content = files[squid.HOSTS_FILE][0].decode().splitlines()
    assert content[1:] == ["198.51.100.7 api.example.com", "2001:db8::7 v6.example.com"]


@pytest.mark.parametrize("hosts", [{"a.example.com": "not an address"}, {"bad name": "198.51.100.7"},
                                   {"a.example.com\nhttp_access allow all": "198.51.100.7"}])
def test_a_bad_host_entry_is_refused(hosts: dict[str, str]) -> None:
    with pytest.raises(UsageError, match=r"\[network\] hosts"):
        squid.render(ProxySpec((GITHUB,), hosts), ())


@pytest.mark.parametrize("pattern", ["bad name.com", "*.", ".", "a.example.com\nhttp_access allow all", "x/y"])
def test_a_pattern_squid_cannot_enforce_is_refused(pattern: str) -> None:
    with pytest.raises(UsageError, match="host pattern"):
        conf(HostRule("allow", pattern))


def test_the_trust_ca_is_its_own_file_for_the_connections_squid_opens() -> None:
    files = squid.render(ProxySpec((GITHUB,)), (), trust_ca="-----BEGIN CERTIFICATE-----\n")
    assert files[squid.TRUST_CA] == (b"-----BEGIN CERTIFICATE-----\n", 0o644)
    assert f"tls_outgoing_options cafile={squid.TRUST_CA}" in files[squid.SQUID_CONF][0].decode().splitlines()


TOKEN = Substitution("GH_TOKEN", "cci-placeholder-0123abcd", "ghp_real%secret\"value",
                     ("api.github.com", "*.githubusercontent.com"),
                     ("Authorization: Bearer {}", "Authorization: Basic {basic:x-access-token}"))


def test_secrets_go_only_to_their_hosts_and_only_into_the_secrets_file() -> None:
    files = squid.render(ProxySpec((GITHUB,)), (TOKEN,))
    text, secrets = files[squid.SQUID_CONF][0].decode(), files[squid.SECRETS_CONF][0].decode()
    assert files[squid.SECRETS_CONF][1] == 0o640
    assert all("real" not in content.decode() for path, (content, _mode) in files.items() if path != squid.SECRETS_CONF)
    assert acl_values(text, "cci_bump1") == [["ssl::server_name", "api.github.com"]]
    assert acl_values(text, "cci_bump2")[0][:2] == ["ssl::server_name_regex", "-i"]
    assert "ssl_bump bump step2 cci_bump cci_bumped_note" in text.splitlines()
    # in a bumped session, a request for another host than the TLS server name is refused before any allow
    mismatch = Squid(text, "cci_rule1", "cci_rule1_ports", "cci_bumped")  # cci_sni_ok does not match
    mismatch.notes["cci_bumped"] = "yes"
    assert mismatch.answer() == "deny" and unquote(mismatch.notes["rule"]) == squid.SNI_MISMATCH
    lines = secrets.splitlines()
    adds = [line for line in lines if line.startswith("request_header_add ")]
    denies = [line for line in lines if line.startswith("request_header_access ")]
    assert adds == [
        'request_header_add Authorization "Bearer ghp_real%%secret\\"value" cci_secret1_form1 cci_secret1_hosts'
        ' cci_secret1_snis cci_tls_request',
        'request_header_add Authorization "Basic eC1hY2Nlc3MtdG9rZW46Z2hwX3JlYWwlc2VjcmV0InZhbHVl" cci_secret1_form2'
        ' cci_secret1_hosts cci_secret1_snis cci_tls_request']
    assert denies == [f"request_header_access Authorization deny cci_secret1_form{number} cci_secret1_hosts"
                      " cci_secret1_snis cci_tls_request" for number in (1, 2)]
    assert acl_values(secrets, "cci_secret1_host1") == [["dstdomain", "-n", "api.github.com"]]
    assert acl_values(secrets, "cci_secret1_hosts") == [["any-of", "cci_secret1_host1", "cci_secret1_host2"]]
    assert acl_values(secrets, "cci_secret1_snis") == [["any-of", "cci_secret1_sni1", "cci_secret1_sni2"]]
    assert acl_values(text, "cci_tls_request") == [["proto", "HTTPS"]]  # never over plain HTTP


def test_a_placeholder_matches_the_whole_header_value_exactly() -> None:
    odd = Substitution("ODD", "p.l+a*c$e^h(o)l[d]e|r?{1}\\", "real", ("api.example.com",),
                       ("X-Key: {}", "Authorization: Bearer {}"))
    secrets = squid.render(ProxySpec((GITHUB,)), (odd,))[squid.SECRETS_CONF][0].decode()
    ((kind, header, regex),) = acl_values(secrets, "cci_secret1_form1")
    assert (kind, header) == ("req_header", "X-Key")
    pattern = posix(regex)
    assert pattern.search(odd.placeholder)
    for other in ("pXl+a*c$e^h(o)l[d]e|r?{1}\\", "xp.l+a*c$e^h(o)l[d]e|r?{1}\\", odd.placeholder + "x", "p", ""):
        assert not pattern.search(other)
    ((_kind, _header, bearer),) = acl_values(secrets, "cci_secret1_form2")
    assert posix(bearer).search(f"Bearer {odd.placeholder}") and not posix(bearer).search(f"Bearer {odd.placeholder}!")


def test_no_secret_no_bump_and_an_empty_secrets_file() -> None:
    files = squid.render(ProxySpec((GITHUB,)), ())
    text = files[squid.SQUID_CONF][0].decode()
    assert "acl cci_bump " not in text and not any(line.startswith("ssl_bump bump") for line in text.splitlines())
    assert "request_header" not in files[squid.SECRETS_CONF][0].decode()


@pytest.mark.parametrize("value", ["line\nbreak", "tab\tx", "caf\u00e9", "nul\0"])
def test_a_value_no_header_can_carry_is_refused_without_showing_it(value: str) -> None:
    secret = Substitution("MY_TOKEN", "cci-placeholder-1", value, ("api.example.com",), ("X-Key: {}",))
    with pytest.raises(UsageError, match="MY_TOKEN") as error:
        squid.render(ProxySpec((GITHUB,)), (secret,))
    assert value not in str(error.value) and value not in str(error.value.hint)


@pytest.mark.parametrize("form", ["no colon {}", "Bad Header: {}", "X-Key: no value", "X-Key: \"{}\"",
                                  "X-Key: {}\nrequest_header_add X y all"])
def test_a_header_form_squid_cannot_use_is_refused(form: str) -> None:
    secret = Substitution("MY_TOKEN", "cci-placeholder-1", "v", ("api.example.com",), (form,))
    with pytest.raises(UsageError, match="not a header form"):
        squid.render(ProxySpec((GITHUB,)), (secret,))


def test_the_ca_command_makes_a_ca_python_accepts() -> None:
    argv = squid.ca_command()
    assert argv[:2] == ["openssl", "req"] and argv[argv.index("-keyout") + 1] == squid.CA_KEY
    assert argv[argv.index("-out") + 1] == squid.CA_CERT
    assert "basicConstraints=critical,CA:TRUE" in argv and "keyUsage=critical,keyCertSign,cRLSign" in argv


def test_the_ca_command_runs(tmp_path: Path) -> None:
    argv = [str(tmp_path / Path(arg).name) if arg in (squid.CA_KEY, squid.CA_CERT) else arg
            for arg in squid.ca_command()]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "ca.pem"), "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout
    assert "CA:TRUE" in text and "Certificate Sign, CRL Sign" in text
