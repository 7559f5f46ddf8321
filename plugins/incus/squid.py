"""The squid configuration of a plan's filtering proxy, rendered from its :class:`ProxySpec` and secrets.

Pure functions: :func:`render` gives every file the proxy container needs (absolute path ->
content and mode); the Incus side pushes them (owned by root, group :data:`PROXY_GID`) and has
squid read them again. The proxy listens on 127.0.0.1:3128 only, with TLS interception
(``ssl-bump``) configured but used only where a secret must be put into requests:

- ``http_access``: ``denied_domains`` rules first, then the allows, each annotated
  (``rule=...``) so that the request log says which rule decided; what no rule allows is denied
  with ``rule=no rule``. A denial is squid's 403 with :data:`DENIED_PAGE` (it names cci's policy).
- A refused CONNECT is answered with that 403 at once, before any TLS: on an ``ssl-bump`` port
  squid would accept it (200) and send the 403 inside a TLS session it makes with a certificate
  of its own, which a client that does not trust the proxy's CA, or checks strictly (Python
  3.13: "Missing Authority Key Identifier"), takes for an attack. Squid bumps every CONNECT it
  refuses except a redirected one, so ``http_access`` lets a CONNECT it would refuse through,
  marked ``cci_refused``; the URL rewriter (:data:`REFUSE_HELPER`, asked about those only)
  marks it redirected, and ``adapted_http_access`` refuses it. Without the helper's answer it
  is refused all the same (inside TLS, as squid does by default).
- TLS: squid peeks at the client's hello; a server name (SNI) that is not the name the
  client asked to CONNECT to is refused (:data:`SNI_HELPER`), so that an allowed CONNECT
  cannot carry a TLS session to another host. The hosts of secrets are bumped (squid opens
  TLS to them itself, trusting the system CAs and ``trust_ca``), everything else is spliced.
  In a bumped session every request must be for the TLS server name (the same check), so
  that a request for another secret's host cannot take that secret into this session.
- secrets: a request header whose whole value is a placeholder form (``Authorization: Bearer
  PLACEHOLDER``), to one of the secret's hosts over an intercepted TLS connection, leaves
  with the real value instead. The real values are only in :data:`SECRETS_CONF` (mode 0640).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from cci_core.api import DEFAULT_PORTS, HostRule, ProxySpec, Substitution, UsageError
from cci_builtin_plugins.incus.proxy_log import LOG_FORMAT, NO_RULE, SNI_MISMATCH

#: where squid listens, in the proxy container (the agents reach it through an Incus proxy device)
LISTEN_ADDRESS = "127.0.0.1"
LISTEN_PORT = 3128
#: squid's configuration, and the directory of cci's other proxy files
SQUID_CONF = "/etc/squid/squid.conf"
CONF_DIR = "/etc/squid/cci"
#: the proxy's CA (made in the container by :func:`ca_command`; the key never leaves it)
CA_CERT = f"{CONF_DIR}/ca.pem"
CA_KEY = f"{CONF_DIR}/ca.key"
#: the real values of secrets (the only file holding them), included by squid.conf
SECRETS_CONF = f"{CONF_DIR}/secrets.conf"
HOSTS_FILE = f"{CONF_DIR}/hosts"
TRUST_CA = f"{CONF_DIR}/trust-ca.pem"
SNI_HELPER = f"{CONF_DIR}/sni-check"
REFUSE_HELPER = f"{CONF_DIR}/refuse"
#: the body of squid's 403 (a template in the directory squid reads its default error pages from)
DENIED_PAGE_NAME = "ERR_CCI_DENIED"
DENIED_PAGE = f"/usr/share/squid/errors/templates/{DENIED_PAGE_NAME}"
#: the request log: one JSON object a line (:mod:`cci_builtin_plugins.incus.proxy_log`)
ACCESS_LOG = "/var/log/squid/cci-access.log"
CACHE_LOG = "/var/log/squid/cache.log"
PID_FILE = "/run/squid.pid"
#: the database of squid's generated certificates (made at the proxy's start when missing)
CERT_DB = "/var/lib/squid/ssl_db"
CERTGEN = "/usr/lib/squid/security_file_certgen"
#: the group squid runs as in Debian (base-passwd's fixed ``proxy``): owns the files squid reads
PROXY_GID = 13
#: how long squid keeps an answer of the SNI helper (a pure function of the TLS server name and the CONNECT's host);
#: only a yes is kept (both names then one, of at most 255 characters), and only so many: the agent chooses the names
#: (a kept no, for each server name of up to 64 kB it made up, grew squid by that much, for an hour)
SNI_CACHE_SECONDS = 3600
SNI_CACHE_ENTRIES = 4096
#: the request log is rotated (squid -k rotate, one old file kept) when it grows beyond this
LOG_ROTATE_BYTES = 16 * 1024 * 1024
#: squid's file descriptors (its default, the soft limit, is 1024: one agent holding 1000 connections stalled every
#: agent of the proxy); squid takes the hard limit when it is lower
MAX_FILE_DESCRIPTORS = 16384

_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BASIC = re.compile(r"\{basic:([^{}]*)\}")

#: the SNI check, run by squid as an external ACL helper: each line is "SNI HOST" (URL-encoded, "-" for
#: none); it answers OK when the TLS server name is the name the client asked to CONNECT to
#: (case-insensitive), or when there is no server name and the CONNECT was to an IP address
SNI_SCRIPT = rb"""#!/usr/bin/perl
# cci: is the TLS server name (SNI) of a CONNECT the name it asked for? Lines: "SNI HOST", URL-encoded.
use strict;
use warnings;
$| = 1;
sub decode { my ($text) = @_; $text =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge; return lc $text; }
while (my $line = <STDIN>) {
    chomp $line;
    my ($sni, $host) = map { decode($_) } (split / /, $line)[0, 1];
    $host = '' unless defined $host;
    $sni = '-' unless defined $sni;
    $host =~ s/^\[(.*)\]$/$1/;
    my $literal = $host =~ /^[0-9.]+$/ || $host =~ /^[0-9a-f:.]+$/ && $host =~ /:/;
    if ($host ne '' && $host ne '-' && ($sni eq $host || ($sni eq '-' || $sni eq '') && $literal)) {
        print "OK\n";
    } else {
        print "ERR\n";
    }
}
"""


#: the refusal helper, squid's URL rewriter for the CONNECTs the rules refuse: it answers each with a redirection,
#: which keeps squid from bumping the CONNECT to send its refusal (adapted_http_access refuses it then)
REFUSE_SCRIPT = b"""#!/bin/sh
# cci: squid's URL rewriter, asked only about CONNECTs the rules refuse (squid then answers their CONNECT with 403)
while read -r _line; do
    echo 'OK status=302 url=http://cci-proxy.invalid/refused'
done
"""
#: the 403's body (squid's template codes: %M the method, %H the host, %p the port)
DENIED_TEXT = b"""cci: the network policy of this container does not allow %M %H:%p.
The user can allow it ([network] allowed_domains in the cci configuration);
'cci network log' shows each request and the rule that decided it.
"""


def ca_command() -> list[str]:
    """The openssl command that makes the proxy's CA (:data:`CA_CERT`, :data:`CA_KEY`) in the proxy container.

    A CA certificate with ``basicConstraints=critical,CA:TRUE`` and ``keyUsage=critical,keyCertSign,cRLSign``
    (Python 3.13 rejects one without), valid for ten years.
    """
    return ["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-noenc", "-sha256", "-days", "3650",
            "-subj", "/CN=cci proxy CA", "-keyout", CA_KEY, "-out", CA_CERT,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign"]


def render(spec: ProxySpec, substitutions: Sequence[Substitution], *,
           trust_ca: str = "") -> dict[str, tuple[bytes, int]]:
    """Every cci file of the proxy container for ``spec``: absolute path -> (content, mode).

    All are owned by root with group :data:`PROXY_GID`. ``trust_ca``: PEM text of extra CAs
    squid trusts for the servers it opens TLS to. Raises :class:`UsageError` for a rule, host
    or header squid could not enforce as written (never showing a secret's value).
    """
    acls: list[str] = []
    access: list[str] = []
    for number, rule in enumerate(sorted(spec.rules, key=lambda rule: rule.action != "deny"), start=1):
        name = f"cci_rule{number}"
        acls.extend(_rule_acls(name, rule))
        line = f"{name} {name}_ports {name}_note"
        access.extend(_denied(line) if rule.action == "deny" else [f"http_access allow {line}"])
    secrets, bumped = _secrets(substitutions)
    files = {
        SQUID_CONF: (_squid_conf(acls, access, bumped, bool(trust_ca)).encode(), 0o644),
        SECRETS_CONF: (secrets.encode(), 0o640),
        HOSTS_FILE: (_hosts_file(spec.hosts).encode(), 0o644),
        SNI_HELPER: (SNI_SCRIPT, 0o755),
        REFUSE_HELPER: (REFUSE_SCRIPT, 0o755),
        DENIED_PAGE: (DENIED_TEXT, 0o644),
    }
    if trust_ca:
        files[TRUST_CA] = (trust_ca.encode(), 0o644)
    return files


def rule_text(rule: HostRule) -> str:
    """How the request log names ``rule``: ``allow .example.com:8443 (preset github)``."""
    ports = ",".join(map(str, rule.ports))
    source = f" ({rule.source})" if rule.source else ""
    return f"{rule.action} {rule.pattern}{':' + ports if ports else ''}{source}"


def _denied(acls: str) -> list[str]:
    """The ``http_access`` lines refusing what matches ``acls``: a CONNECT is let through marked ``cci_refused``
    (``adapted_http_access`` refuses it, after the refusal helper kept squid from bumping it)."""
    return [f"http_access allow CONNECT {acls} cci_refuse", f"http_access deny {acls} cci_refuse"]


def _annotation(name: str, text: str) -> str:
    """An ACL that always matches and notes ``text`` (URL-encoded: squid's configuration is space-separated)."""
    return f"acl {name} annotate_transaction rule={quote(text, safe='')}"


def _rule_acls(name: str, rule: HostRule) -> list[str]:
    host = _host_acl(name, rule.pattern, "dst")
    ports = " ".join(str(port) for port in (rule.ports or DEFAULT_PORTS))
    return [*host, f"acl {name}_ports port {ports}", _annotation(f"{name}_note", rule_text(rule))]


def _host_acl(name: str, pattern: str, kind: str) -> list[str]:
    """ACL lines defining ``name`` as "the host matches ``pattern``".

    ``kind``: ``dst`` (the request's host: dstdomain) or ``sni`` (the TLS server name). An
    IP address matches requests to that address written as one, never a name that resolves to it;
    a name never matches a request for an address (``-n``: squid would look the address's name up,
    a name its owner chooses, and the hosts map gives too).
    """
    address = _address(pattern)
    if address is not None:
        if kind == "sni":
            return [f"acl {name} ssl::server_name {address}"]
        return [f"acl {name}_literal dstdom_regex -n {_IP_LITERAL}", f"acl {name}_address dst {address}",
                f"acl {name} all-of {name}_literal {name}_address"]
    suffix = pattern[2:] if pattern.startswith("*.") else pattern[1:] if pattern.startswith(".") else pattern
    if not _NAME.match(suffix) or len(suffix) > 253:
        raise UsageError(f"the proxy cannot use the host pattern {pattern!r}",
                         hint="write a name (api.example.com), *.example.com, .example.com or an IP address")
    regex_type, domain_type = ("ssl::server_name_regex", "ssl::server_name") if kind == "sni" else \
        ("dstdom_regex -n", "dstdomain -n")
    if pattern.startswith("*."):
        return [f"acl {name} {regex_type} -i {_SUBDOMAIN}{_escape(suffix)}$"]
    return [f"acl {name} {domain_type} {pattern.lower()}"]


#: the start of a subdomain's pattern: a dot before the parent name
_SUBDOMAIN = r"\."
_IP_LITERAL = r"^(\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?|[0-9.]+)$"


def _address(pattern: str) -> str | None:
    """The IP address ``pattern`` is (``[2001:db8::1]`` or ``2001:db8::1``), or None."""
    try:
        return str(ipaddress.ip_address(pattern.strip("[]")))
    except ValueError:
        return None


def _escape(text: str) -> str:
    """``text`` as a literal in a POSIX extended regular expression (every character but letters and digits
    bracketed, a space as any white space: squid's configuration splits its words at spaces)."""
    return "".join(char if char.isalnum() and char.isascii() else "[[:space:]]" if char == " "
                   else f"\\{char}" if char in "\\^" else f"[{char}]" for char in text)


def _secrets(substitutions: Sequence[Substitution]) -> tuple[str, list[str]]:
    """The included file of the secrets (ACLs on the placeholders, the real headers), and the ACL lines of
    ``cci_bump``: the TLS server names to intercept."""
    lines = ["# cci: the secrets passed by placeholder. Real values: this file only (mode 0640)."]
    bumped: list[str] = []
    bump_names: list[str] = []
    for number, substitution in enumerate(substitutions, start=1):
        if not substitution.hosts:
            continue
        name = f"cci_secret{number}"
        hosts, snis = [], []
        for index, pattern in enumerate(substitution.hosts, start=1):
            bump_names.append(f"cci_bump{len(bump_names) + 1}")
            bumped.extend(_host_acl(bump_names[-1], pattern, "sni"))
            hosts.append(f"{name}_host{index}")
            snis.append(f"{name}_sni{index}")
            lines += [*_host_acl(hosts[-1], pattern, "dst"), *_host_acl(snis[-1], pattern, "sni")]
        lines += [f"acl {name}_hosts any-of {' '.join(hosts)}", f"acl {name}_snis any-of {' '.join(snis)}"]
        for form_number, form in enumerate(substitution.headers, start=1):
            header, placeholder, real = _header_values(substitution, form)
            acl = f"{name}_form{form_number}"
            where = f"{acl} {name}_hosts {name}_snis cci_tls_request"
            lines += [f"acl {acl} req_header {header} ^{_escape(placeholder)}$",
                      f"request_header_access {header} deny {where}",
                      f"request_header_add {header} {_quoted(real, substitution.name)} {where}"]
    if bump_names:
        bumped.append(f"acl cci_bump any-of {' '.join(bump_names)}")
    return "\n".join(lines) + "\n", bumped


def _header_values(substitution: Substitution, form: str) -> tuple[str, str, str]:
    """The header name of ``form`` and its value with the placeholder, and with the real value."""
    header, colon, template = form.partition(":")
    header, template = header.strip(), template.strip()
    if not colon or not _HEADER.match(header) or ("{}" not in template and not _BASIC.search(template)) \
            or any(char in '"\\' or not (char.isascii() and char.isprintable()) for char in template):
        raise UsageError(f"{substitution.name}: {form!r} is not a header form",
                         hint='write it as "Header-Name: text {}" ({} stands for the value, '
                              '{basic:USER} for Basic credentials)')

    def fill(value: str) -> str:
        text = _BASIC.sub(lambda match: base64.b64encode(f"{match[1]}:{value}".encode()).decode(), template)
        return text.replace("{}", value)

    return header, fill(substitution.placeholder), fill(substitution.value)


def _quoted(value: str, name: str) -> str:
    """``value`` as squid's quoted header value (``%`` starts a log-format code there: doubled)."""
    if any(not char.isprintable() or not char.isascii() for char in value):
        raise UsageError(f"the secret {name} holds characters a request header cannot carry",
                         hint="a header value is printable ASCII on one line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _hosts_file(hosts: Mapping[str, str]) -> str:
    lines = ["# cci: the names this proxy resolves itself ([network] hosts)"]
    for name, address in sorted(hosts.items()):
        parsed = _address(str(address))
        if parsed is None or not _NAME.match(str(name)):
            raise UsageError(f"[network] hosts: {name!r} = {address!r} is not a name and an IP address",
                             hint='write it as "api.example.com" = "198.51.100.7"')
        lines.append(f"{parsed} {str(name).lower()}")
    return "\n".join(lines) + "\n"


def _squid_conf(acls: list[str], access: list[str], bumped: list[str], trust_ca: bool) -> str:
    bump = [*bumped, "ssl_bump bump step2 cci_bump cci_bumped_note"] if bumped else []
    return "\n".join([
        "# cci: the filtering proxy of a network plan. Generated: changes are overwritten.",
        f"http_port {LISTEN_ADDRESS}:{LISTEN_PORT} ssl-bump generate-host-certificates=on"
        f" dynamic_cert_mem_cache_size=4MB tls-cert={CA_CERT} tls-key={CA_KEY}",
        f"sslcrtd_program {CERTGEN} -s {CERT_DB} -M 4MB",
        "sslcrtd_children 4 startup=1 idle=1",
        f"tls_outgoing_options cafile={TRUST_CA}" if trust_ca else "# tls_outgoing_options: the system CAs",
        "visible_hostname cci-proxy",
        f"pid_filename {PID_FILE}",
        f"max_filedescriptors {MAX_FILE_DESCRIPTORS}",
        f"hosts_file {HOSTS_FILE}",
        "cache deny all",
        "forwarded_for delete",
        "via off",
        "httpd_suppress_version_string on",
        "shutdown_lifetime 1 seconds",
        "pinger_enable off",
        "on_unsupported_protocol respond all",
        "logfile_rotate 1",
        f"cache_log {CACHE_LOG}",
        f"logformat cci_json {LOG_FORMAT}",
        f"access_log stdio:{ACCESS_LOG} cci_json",
        "",
        "acl CONNECT method CONNECT",
        "acl step1 at_step SslBump1",
        "acl step2 at_step SslBump2",
        "acl cci_tls_request proto HTTPS",
        "acl cci_private dst 0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12"
        " 192.168.0.0/16 ::/128 ::1 fc00::/7 fe80::/10",
        f"acl cci_ip_literal dstdom_regex -n {_IP_LITERAL}",
        # the answer depends on the two names only: kept (a new connection to a name seen asks no helper)
        f"external_acl_type cci_sni_check children-max=2 children-startup=1 ttl={SNI_CACHE_SECONDS}"
        f" negative_ttl=0 cache={SNI_CACHE_ENTRIES} %ssl::>sni %>rd {SNI_HELPER}",
        "acl cci_sni_ok external cci_sni_check",
        _annotation("cci_no_rule", NO_RULE),
        _annotation("cci_sni_mismatch", SNI_MISMATCH),
        "acl cci_bumped_note annotate_client cci_bumped=yes",
        "acl cci_bumped note cci_bumped yes",
        *acls,
        "",
        "acl cci_refuse annotate_transaction cci_refused=yes",
        "acl cci_refused note cci_refused yes",
        f"deny_info {DENIED_PAGE_NAME} cci_refuse",
        f"deny_info {DENIED_PAGE_NAME} cci_refused",
        f"url_rewrite_program {REFUSE_HELPER}",
        "url_rewrite_children 2 startup=1 idle=1",
        "url_rewrite_access allow cci_refused",
        "url_rewrite_access deny all",
        "",
        "http_access deny manager cci_no_rule cci_refuse",
        *_denied("cci_ip_literal cci_private cci_no_rule"),
        "http_access deny cci_bumped !cci_sni_ok cci_sni_mismatch cci_refuse",
        *access,
        *_denied("all cci_no_rule"),
        "adapted_http_access deny cci_refused",
        "adapted_http_access allow all",
        "",
        "ssl_bump peek step1",
        "ssl_bump terminate step2 !cci_sni_ok cci_sni_mismatch",
        *bump,
        "ssl_bump splice all",
        "",
        f"include {SECRETS_CONF}",
        "",
    ])
