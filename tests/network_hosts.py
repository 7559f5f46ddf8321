"""Test hosts for network-policy integration tests: an "internet", a private and a metadata host.

Each host is a network namespace joined to this machine by a veth pair, so an Incus container
reaches it through the host's routing and nothing ever leaves the machine. Every namespace
address serves a TCP "who am I" on port 80 (it writes the address it was reached at, then
closes), and the internet namespace runs a dnsmasq that answers only the names a test sets
and never forwards a query. The internet hosts also serve HTTPS on port 443 (a certificate of a
test CA made at setup, :attr:`TestHosts.ca_file`) and plain HTTP on port 8080, answering every
request with a JSON account of what arrived (tests/web_echo_server.py): which host answered, the
TLS server name, the request line and every header. Needs root, ``ip`` (iproute2), ``dnsmasq``,
``unshare`` and ``openssl``.

    with TestHosts() as hosts:
        hosts.set_names({"allowed.ccit.test": [INTERNET_HOSTS[0]]})
        container_runs(probe_script(INTERNET_HOSTS[0]))   # -> "198.51.100.2" or "blocked"

Only one set of hosts can exist on a machine at a time (a lock guards it). Setup first
removes what a killed earlier run left behind: namespaces and links with these exact names
and the processes inside those namespaces.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

INTERNET_GATEWAY = "198.51.100.1"
"""This machine's address on the internet hosts' link."""
INTERNET_HOSTS = ("198.51.100.2", "198.51.100.3", "198.51.100.4")
"""Three "public internet" hosts (TEST-NET-2), all in the namespace ``ccit-inet``."""
DNS_SERVER = "198.51.100.53"
"""The test dnsmasq (also in ``ccit-inet``; it serves port 80 too)."""
PRIVATE_HOST = "10.99.0.2"
"""A host in a private range (RFC 1918), namespace ``ccit-priv``."""
METADATA_HOST = "169.254.169.254"
"""A cloud metadata look-alike (link-local), namespace ``ccit-meta``."""
ECHO_PORT = 80
"""The port every test host serves its address on."""
HTTPS_PORT = 443
"""The port every internet host serves HTTPS on (tests/web_echo_server.py)."""
WEB_PORT = 8080
"""The port every internet host serves the same JSON answers on over plain HTTP."""
TLS_NAMES = ("ccit.test", "*.ccit.test", "*.wild.ccit.test", "*.dot.ccit.test", "api.anthropic.com")
"""The names the internet hosts' certificate holds (with their addresses): tests name the hosts under these.

``api.anthropic.com`` too: a proxy test maps that name to a test host through the proxy's own host map
(only the test CA vouches for the certificate, and only a test trusts that CA)."""
WEB_SERVER = Path(__file__).with_name("web_echo_server.py")
WEB_CLIENT = Path(__file__).with_name("web_client.py")
"""A standalone client for containers (CONNECT with any server name, timing): see its docstring."""

LOCK_FILE = Path("/run/lock/ccit-network-hosts.lock")
"""Held for as long as a :class:`TestHosts` is set up."""
TMP_PREFIX = "ccit-hosts-"
"""Prefix of the temp dir holding the hosts file, resolv.conf, logs and the echo server."""
ETC_RESOLV_CONF = Path("/etc/resolv.conf")

# Ranges this machine uses itself (uplink, registry route, resolver, Incus test bridge): never ours.
_FORBIDDEN = tuple(ipaddress.ip_network(net) for net in
                   ("192.0.2.0/24", "203.0.113.0/24", "10.255.255.0/24", "10.213.7.0/24"))


@dataclass(frozen=True)
class Link:
    """One test namespace and the veth joining it to this machine."""

    namespace: str
    host_link: str
    host_address: str
    addresses: tuple[str, ...]
    network: ipaddress.IPv4Network


LINKS = (
    Link("ccit-inet", "ccit-inet-h", INTERNET_GATEWAY, (*INTERNET_HOSTS, DNS_SERVER),
         ipaddress.IPv4Network("198.51.100.0/24")),
    Link("ccit-priv", "ccit-priv-h", "10.99.0.1", (PRIVATE_HOST,), ipaddress.IPv4Network("10.99.0.0/24")),
    Link("ccit-meta", "ccit-meta-h", "169.254.169.1", (METADATA_HOST,), ipaddress.IPv4Network("169.254.169.0/24")),
)
NAMESPACES = tuple(link.namespace for link in LINKS)
HOST_LINKS = tuple(link.host_link for link in LINKS)
ECHO_ADDRESSES = tuple(address for link in LINKS for address in link.addresses)
"""Every address that serves :data:`ECHO_PORT`."""

_NS_LINK = "eth0"
"""The veth end's name inside each namespace."""

_ECHO_SERVER = '''\
import selectors, socket, sys
port, addresses = int(sys.argv[1]), sys.argv[2:]
sel = selectors.DefaultSelector()
for address in addresses:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(256)
    server.setblocking(False)
    sel.register(server, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        try:
            conn, _ = key.fileobj.accept()
        except OSError:
            continue
        with conn:
            try:
                conn.settimeout(2)
                conn.sendall((conn.getsockname()[0] + "\\n").encode())
            except OSError:
                pass
'''


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and a server certificate it signed, as PEM files (the keys readable by root only)."""

    ca: Path
    ca_key: Path
    cert: Path
    key: Path


def make_tls(directory: Path, names: Sequence[str] = TLS_NAMES, addresses: Sequence[str] = INTERNET_HOSTS) -> TlsFiles:
    """A fresh test CA in ``directory`` and a server certificate for ``names`` and ``addresses``, with openssl.

    The CA has what strict verifiers demand (Python 3.13 and later): ``basicConstraints=critical,CA:TRUE``,
    ``keyUsage=critical,keyCertSign,cRLSign`` and key identifiers; the server certificate names every
    name and address as a subject alternative name. Both are valid for two days. The CA certificate
    is world-readable (a non-root cci reads it through ``[network] proxy_trust_ca``).
    """
    for name in names:
        if not re.fullmatch(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?", name):
            raise ValueError(f"bad certificate name: {name!r}")
    alt_names = [f"DNS:{name}" for name in names] + [f"IP:{ipaddress.ip_address(a)}" for a in addresses]
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "ca.key", directory / "server.pem", directory / "server.key")
    config = directory / "openssl.cnf"
    config.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = cci test CA\n"
        "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n"
        "[server]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
        f"extendedKeyUsage = serverAuth\nsubjectAltName = {','.join(alt_names)}\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n")
    old_umask = os.umask(0o077)
    try:
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        _run("openssl", "req", "-x509", "-new", *ec, "-config", str(config), "-extensions", "ca",
             "-keyout", str(files.ca_key), "-out", str(files.ca), "-days", "2")
        csr = directory / "server.csr"
        _run("openssl", "req", "-new", *ec, "-config", str(config), "-subj", f"/CN={names[0]}",
             "-keyout", str(files.key), "-out", str(csr))
        _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey", str(files.ca_key),
             "-set_serial", str(secrets.randbits(63)), "-days", "2", "-extfile", str(config),
             "-extensions", "server", "-out", str(files.cert))
    finally:
        os.umask(old_umask)
    files.ca.chmod(0o644)
    files.cert.chmod(0o644)
    return files


def start_web_server(tls: TlsFiles, addresses: Sequence[str], *, tls_port: int = HTTPS_PORT,
                     http_port: int = WEB_PORT, prefix: Sequence[str] = (), script: Path = WEB_SERVER,
                     log: Path | None = None, timeout: float = 10) -> tuple[subprocess.Popen[bytes], list[list[object]]]:
    """Start tests/web_echo_server.py (``prefix`` before it: ``ip netns exec NS``) and wait until it listens.

    Returns the process and what it listens on: ``[address, tls port, http port]`` for each address.
    Its errors go to ``log`` (quoted when it does not start).
    """
    with open(log or os.devnull, "wb") as errors:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-I", str(script), str(tls.cert), str(tls.key), str(tls_port), str(http_port),
             *addresses], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, start_new_session=True)
    assert proc.stdout
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode(errors="replace") if ready else ""
    if not line.startswith("ready "):
        _stop(proc)
        said = log.read_text(errors="replace").strip()[-500:] if log else ""
        raise RuntimeError(f"the web server on {', '.join(addresses)} did not start: {said or line.strip()!r}")
    return proc, json.loads(line.split(" ", 1)[1])


def web_get(address: str, *, tls_port: int = HTTPS_PORT, ca: Path | None = None, sni: str | None = None,
            headers: dict[str, str] | None = None, path: str = "/", timeout: float = 5) -> dict[str, object]:
    """The JSON account a web server gives for a GET, from this machine (HTTPS unless ``ca`` is None).

    With ``ca``: TLS to ``address:tls_port`` checked against that CA, sending ``sni`` (default: the
    address). Without: plain HTTP to ``address:tls_port``.
    """
    import http.client
    import ssl

    conn: http.client.HTTPConnection
    if ca is None:
        conn = http.client.HTTPConnection(address, tls_port, timeout=timeout)
    else:
        context = ssl.create_default_context(cafile=str(ca))
        conn = http.client.HTTPSConnection(address, tls_port, timeout=timeout, context=context)
        if sni is not None:
            conn.sock = context.wrap_socket(socket.create_connection((address, tls_port), timeout=timeout),
                                            server_hostname=sni)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return dict(json.loads(response.read()))
    finally:
        conn.close()


class DnsError(Exception):
    """The test DNS server answered with an error code other than NXDOMAIN."""


def probe_script(address: str, port: int = ECHO_PORT, timeout: float = 3) -> str:
    """A shell command line (for ``bash -c`` or ``sh -c`` in a container) printing what
    ``address:port`` answers, or ``blocked`` when it cannot connect (refused, dropped, timed out).

    Needs only bash and coreutils' ``timeout``. ``address`` may also be a host name: bash then
    resolves it through the container's resolver.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", address):
        raise ValueError(f"not an address or host name: {address!r}")
    if not 0 < port < 65536:
        raise ValueError(f"bad port: {port}")
    if timeout <= 0:
        raise ValueError(f"bad timeout: {timeout}")
    return (f"timeout {timeout:g} bash -c 'exec 3<>/dev/tcp/{address}/{port} && cat <&3' 2>/dev/null"
            " || echo blocked")


def fetch(address: str, port: int = ECHO_PORT, timeout: float = 3) -> str:
    """What the echo server at ``address`` answers (stripped), read from this machine.

    Raises :class:`OSError` (e.g. ``ConnectionRefusedError``, ``TimeoutError``) when it cannot connect.
    """
    with socket.create_connection((address, port), timeout=timeout) as conn:
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode().strip()


def lookup(name: str, server: str = DNS_SERVER, timeout: float = 1.0) -> list[str]:
    """The IPv4 addresses ``server`` gives for ``name`` (sorted; ``[]`` for NXDOMAIN or no A record).

    A raw UDP query, independent of this machine's resolver. Raises :class:`OSError` when the
    server does not answer (``ConnectionRefusedError`` when nothing listens, ``TimeoutError``)
    and :class:`DnsError` for an error answer such as REFUSED or SERVFAIL.
    """
    query_id = secrets.randbelow(1 << 16)
    qname = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split("."))
    query = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + qname + b"\0" + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, 53))
        sock.send(query)
        deadline = time.monotonic() + timeout
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            reply = sock.recv(4096)
            if len(reply) >= 12 and struct.unpack("!H", reply[:2])[0] == query_id:
                break
    _, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", reply[:12])
    rcode = flags & 0xF
    if rcode == 3:
        return []
    if rcode:
        raise DnsError(f"{server} answered rcode {rcode} for {name}")
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(reply, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(reply, offset)
        rtype, _, _, rdlength = struct.unpack("!HHIH", reply[offset:offset + 10])
        offset += 10
        if rtype == 1 and rdlength == 4:
            addresses.append(socket.inet_ntoa(reply[offset:offset + 4]))
        offset += rdlength
    return sorted(addresses, key=ipaddress.IPv4Address)


def _skip_name(message: bytes, offset: int) -> int:
    """The offset just past the (possibly compressed) domain name at ``offset``."""
    while True:
        length = message[offset]
        if length >= 0xC0:
            return offset + 2
        offset += 1 + length
        if length == 0:
            return offset


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc`` (SIGKILL after 3 s), reap it and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=3)
    for pipe in (proc.stdout, proc.stderr):
        if pipe:
            pipe.close()


def _existing_namespaces() -> set[str]:
    out = _run("ip", "-j", "netns", "list").stdout.strip()
    return {entry["name"] for entry in json.loads(out)} if out else set()


def _link_exists(name: str) -> bool:
    return _run("ip", "link", "show", "dev", name, check=False).returncode == 0


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def route_conflicts(routes: list[dict[str, object]] | None = None) -> list[str]:
    """Routes reaching into the test ranges that are not on our links.

    ``routes`` is ``ip -j -4 route show table all`` output; by default this machine's.
    """
    if routes is None:
        routes = json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    conflicts = []
    for route in routes:
        dst = route.get("dst", "default")
        if dst == "default" or route.get("dev") in HOST_LINKS:
            continue
        network = ipaddress.ip_network(str(dst), strict=False)
        for link in LINKS:
            if network.overlaps(link.network):
                conflicts.append(f"{dst} dev {route.get('dev', '?')} table {route.get('table', 'main')}"
                                 f" overlaps {link.network}")
    return conflicts


class TestHosts:
    """The test namespaces, their echo servers and the test dnsmasq; a context manager.

    ``setup()`` builds everything (about 0.3 s), ``teardown()`` removes it; both are idempotent.
    Fits a session-scoped pytest fixture: ``with TestHosts() as hosts: yield hosts``.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, *, wait: float = 0) -> None:
        """``wait``: how many seconds :meth:`setup` waits for another TestHosts on this machine to go (0: none)."""
        self.tmp_dir: Path | None = None
        self.wait = wait
        self._lock: int | None = None
        self._echo: dict[str, subprocess.Popen[bytes]] = {}
        self._dns: subprocess.Popen[bytes] | None = None
        self._web: subprocess.Popen[bytes] | None = None
        self._tls: TlsFiles | None = None
        self._names: dict[str, list[str]] = {}
        self._set_ip_forward = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> TestHosts:
        self.setup()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.teardown()

    def setup(self) -> None:
        """Create the namespaces, links, echo servers and dnsmasq (no names yet)."""
        if self._lock is not None:
            return
        if os.geteuid() != 0:
            raise RuntimeError("TestHosts needs root (network namespaces, veth, unshare)")
        for link in LINKS:
            bad = [str(net) for net in _FORBIDDEN if link.network.overlaps(net)]
            if bad:
                raise RuntimeError(f"test range {link.network} overlaps a range of this machine: {bad}")
        self._acquire_lock()
        try:
            _remove_leftovers()
            conflicts = route_conflicts()
            if conflicts:
                raise RuntimeError("test ranges are already routed on this machine, refusing to set up: "
                                   + "; ".join(conflicts))
            self.tmp_dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
            self.tmp_dir.chmod(0o755)  # dnsmasq drops to "nobody" and re-reads the hosts file on SIGHUP
            (self.tmp_dir / "echo_server.py").write_text(_ECHO_SERVER)
            self.resolv_conf.write_text(f"nameserver {DNS_SERVER}\noptions timeout:1 attempts:1\n")
            self._write_hosts({})
            if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0":
                Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
                self._set_ip_forward = True
            for link in LINKS:
                self._make_link(link)
            for link in LINKS:
                self._echo[link.namespace] = self._start_echo(link)
            for link in LINKS:
                self._wait_ready(link.namespace, self._echo[link.namespace])
            self._start_web()
            self.start_dns()
        except BaseException:
            self.teardown()
            raise

    def teardown(self) -> None:
        """Stop the processes (by pid), delete the namespaces, links and temp files; release the lock."""
        procs = [*self._echo.values(), *(proc for proc in (self._dns, self._web) if proc)]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            _stop(proc)
        self._echo.clear()
        self._dns = None
        self._web = None
        self._tls = None
        if self._lock is not None:
            _remove_leftovers()
        if self._set_ip_forward:
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
            self._set_ip_forward = False
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None
        self._names = {}
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _acquire_lock(self) -> None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RuntimeError(f"another TestHosts is set up on this machine (lock {LOCK_FILE} is held"
                                       + (f" for {self.wait:g} s" if self.wait else "") + ")") from None
                time.sleep(0.2)
        self._lock = fd

    def _make_link(self, link: Link) -> None:
        ns = link.namespace
        prefix = link.network.prefixlen
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", link.host_link, "type", "veth", "peer", "name", _NS_LINK, "netns", ns)
        _run("ip", "addr", "add", f"{link.host_address}/{prefix}", "dev", link.host_link)
        _run("ip", "link", "set", link.host_link, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        for address in link.addresses:
            _run("ip", "-n", ns, "addr", "add", f"{address}/{prefix}", "dev", _NS_LINK)
        _run("ip", "-n", ns, "link", "set", _NS_LINK, "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", link.host_address)

    def _start_echo(self, link: Link) -> subprocess.Popen[bytes]:
        assert self.tmp_dir
        with open(self.tmp_dir / f"echo-{link.namespace}.log", "wb") as log:
            return subprocess.Popen(
                ["ip", "netns", "exec", link.namespace, sys.executable, "-I",
                 str(self.tmp_dir / "echo_server.py"), str(ECHO_PORT), *link.addresses],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True)

    def _start_web(self) -> None:
        """The test CA, and the HTTPS and HTTP servers of the internet hosts (not the DNS server's address)."""
        assert self.tmp_dir
        self._tls = make_tls(self.tmp_dir / "tls")
        shutil.copy(WEB_SERVER, self.tmp_dir / WEB_SERVER.name)
        self._web, _ = start_web_server(self._tls, INTERNET_HOSTS, prefix=("ip", "netns", "exec", "ccit-inet"),
                                        script=self.tmp_dir / WEB_SERVER.name, log=self.tmp_dir / "web.log")

    def _wait_ready(self, namespace: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout and self.tmp_dir
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        if not ready or proc.stdout.readline() != b"ready\n":
            log = (self.tmp_dir / f"echo-{namespace}.log").read_text(errors="replace")
            raise RuntimeError(f"echo server in {namespace} did not start: {log.strip()}")

    # -- paths and state -------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if self.tmp_dir is None:
            raise RuntimeError("TestHosts is not set up")
        return self.tmp_dir / name

    @property
    def resolv_conf(self) -> Path:
        """A resolv.conf naming only the test dnsmasq (``nameserver 198.51.100.53``)."""
        return self._path("resolv.conf")

    @property
    def hosts_file(self) -> Path:
        """dnsmasq's addn-hosts file, rewritten by :meth:`set_names`."""
        return self._path("hosts")

    @property
    def dns_log(self) -> Path:
        """dnsmasq's log (it logs every query)."""
        return self._path("dnsmasq.log")

    @property
    def tls(self) -> TlsFiles:
        """The test CA and the internet hosts' certificate (made at setup)."""
        if self._tls is None:
            raise RuntimeError("TestHosts is not set up")
        return self._tls

    @property
    def ca_file(self) -> Path:
        """The test CA's certificate (PEM, world-readable): what a client trusts to talk to the internet hosts."""
        return self.tls.ca

    @property
    def names(self) -> dict[str, list[str]]:
        """The names dnsmasq answers, as last given to :meth:`set_names`."""
        return {name: list(addresses) for name, addresses in self._names.items()}

    @property
    def dns_running(self) -> bool:
        """Whether dnsmasq runs (false after :meth:`stop_dns`)."""
        return self._dns is not None and self._dns.poll() is None

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the running processes: ``echo:NAMESPACE``, ``web`` and ``dnsmasq``."""
        pids = {f"echo:{ns}": proc.pid for ns, proc in self._echo.items() if proc.poll() is None}
        for name, proc in (("web", self._web), ("dnsmasq", self._dns)):
            if proc is not None and proc.poll() is None:
                pids[name] = proc.pid
        return pids

    # -- DNS ---------------------------------------------------------------------------------

    def set_names(self, mapping: dict[str, list[str]]) -> None:
        """Make dnsmasq answer exactly these names (name -> IPv4 addresses); others get NXDOMAIN.

        Rewrites the hosts file and, when dnsmasq runs, reloads it (SIGHUP) and waits until the
        answers match.
        """
        clean: dict[str, list[str]] = {}
        for name, addresses in mapping.items():
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", name):
                raise ValueError(f"bad host name: {name!r}")
            if isinstance(addresses, str):
                raise TypeError(f"addresses of {name} must be a list, not a string")
            clean[name] = sorted({str(ipaddress.IPv4Address(a)) for a in addresses}, key=ipaddress.IPv4Address)
        removed = set(self._names) - set(clean)
        self._write_hosts(clean)
        self._names = clean
        if self.dns_running:
            assert self._dns
            self._dns.send_signal(signal.SIGHUP)
            self._wait_dns({**clean, **{name: [] for name in removed}})

    def stop_dns(self) -> None:
        """Stop dnsmasq (a DNS outage: queries to :data:`DNS_SERVER` are refused)."""
        if self._dns is not None:
            _stop(self._dns)
            self._dns = None

    def start_dns(self) -> None:
        """Start dnsmasq (again) with the current names and wait until it answers them."""
        if self.dns_running:
            return
        self._dns = subprocess.Popen(
            ["ip", "netns", "exec", "ccit-inet", "dnsmasq",
             "--keep-in-foreground",
             "--conf-file=/dev/null",      # never read /etc/dnsmasq.conf
             "--no-resolv", "--no-hosts", "--no-poll",
             "--local=/#/",                 # every domain is local: answer from the hosts file or NXDOMAIN
             f"--addn-hosts={self.hosts_file}",
             f"--listen-address={DNS_SERVER}", "--bind-interfaces", "--port=53",
             "--no-negcache", "--pid-file=", "--user=nobody",
             f"--log-facility={self.dns_log}", "--log-queries"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            self._wait_dns(self._names)
        except BaseException:
            self.stop_dns()
            raise

    def _write_hosts(self, mapping: dict[str, list[str]]) -> None:
        lines = [f"{address} {name}\n" for name, addresses in mapping.items() for address in addresses]
        tmp = self._path("hosts.new")
        tmp.write_text("".join(lines))
        tmp.chmod(0o644)
        tmp.replace(self.hosts_file)

    def _wait_dns(self, expected: dict[str, list[str]], timeout: float = 5) -> None:
        """Wait until dnsmasq answers (``expected`` maps names to their addresses, [] for NXDOMAIN)."""
        probes = expected or {"ready.ccit.invalid": []}
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            if self._dns is None or self._dns.poll() is not None:
                err = self._dns.stderr.read().decode(errors="replace") if self._dns and self._dns.stderr else ""
                raise RuntimeError(f"dnsmasq exited: {err.strip()}")
            try:
                answers = {name: lookup(name, timeout=0.2) for name in probes}
                if answers == probes:
                    return
                last = answers
            except (OSError, DnsError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq does not answer as expected {probes}: {last}")
            time.sleep(0.02)

    # -- host-side commands ----------------------------------------------------------------

    def host_command(self, argv: Sequence[str]) -> list[str]:
        """A command line running ``argv`` on this machine with name resolution through the test dnsmasq.

        It runs in a private mount namespace in which :attr:`resolv_conf` is bind-mounted over
        /etc/resolv.conf (over its target when that is a symlink); the real file is untouched.
        """
        target = ETC_RESOLV_CONF.resolve()
        if not target.is_file():
            raise RuntimeError(f"{ETC_RESOLV_CONF} resolves to {target}, which is not a file to mount over")
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"',
                "sh", str(self.resolv_conf), str(target), *argv]


def _orphans() -> list[int]:
    """Echo and web servers and dnsmasq processes of an earlier run, found by their command lines.

    Catches those whose namespace is already gone (``ip netns del`` does not stop them).
    """
    tmp = os.path.join(tempfile.gettempdir(), TMP_PREFIX)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [arg.decode(errors="replace") for arg in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        echo = any(arg.startswith(tmp) and arg.endswith(("/echo_server.py", "/" + WEB_SERVER.name)) for arg in argv)
        dns = os.path.basename(argv[0]) == "dnsmasq" and any(arg.startswith("--addn-hosts=" + tmp) for arg in argv)
        if echo or dns:
            found.append(int(entry.name))
    return found


def _remove_leftovers() -> None:
    """Delete the test namespaces and links of an earlier (killed) run, killing the processes inside.

    Only touches namespaces and links with this module's exact names. The processes killed (by pid)
    are those inside those namespaces (``ip netns pids``) and this module's echo servers and dnsmasq
    found by command line (:func:`_orphans`): only this module starts either.
    """
    existing = _existing_namespaces()
    pids = set(_orphans())
    for ns in NAMESPACES:
        if ns in existing:
            pids.update(int(pid) for pid in _run("ip", "netns", "pids", ns, check=False).stdout.split())
    pids.discard(os.getpid())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"leftover test host processes {sorted(pids)} do not die")
        time.sleep(0.01)
    for link in HOST_LINKS:
        if _link_exists(link):
            _run("ip", "link", "del", "dev", link)
    for ns in NAMESPACES:
        if ns in existing:
            _run("ip", "netns", "del", ns)
    # a killed run also leaves its temp dir; the lock guarantees no live run owns one
    for stale in Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)


# --- services and addresses of this machine itself ------------------------------------------------------

EXTRA_ADDRESS_PREFIX = "ccit-x"
"""Prefix of the veth pairs :func:`extra_host_address` makes (with 8 hex digits: 14 characters)."""


def datagram_script(port: int, *targets: str) -> str:
    """A shell command line for a container: one UDP datagram ``cci-probe <target>`` to each target.

    Broadcast is allowed on the socket; a target may be a shell expression (``$brd``). Needs only
    perl-base, which every Debian has. Prints nothing; an unsendable datagram is skipped.
    """
    if not 0 < port < 65536:
        raise ValueError(f"bad port: {port}")
    for target in targets:
        if not re.fullmatch(r"[0-9.]+|\$[a-z]+", target):
            raise ValueError(f"not an address: {target!r}")
    listed = " ".join(f'"{target}"' for target in targets)
    return ("perl -MIO::Socket::INET -e 'my $p = shift; for my $t (@ARGV) {"
            " my $s = IO::Socket::INET->new(Proto => \"udp\", Broadcast => 1) or next;"
            " send($s, \"cci-probe $t\", 0, Socket::pack_sockaddr_in($p, Socket::inet_aton($t))) }'"
            f" {port} {listed}")


class HostListener:
    """A UDP and a TCP service on this machine, on one port of every address (``0.0.0.0``).

    The TCP service answers ``host``; the UDP one keeps the datagrams it gets (and answers
    ``host`` too). A context manager.
    """

    __test__ = False

    def __init__(self) -> None:
        import threading

        self.datagrams: list[tuple[bytes, str]] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        for _ in range(20):  # a port free for both protocols
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("0.0.0.0", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("0.0.0.0", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        self.tcp.listen(16)

    def __enter__(self) -> HostListener:
        import threading

        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for sock in (self.udp, self.tcp):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(timeout=3)

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.udp], [], [], 0.2)
            if not ready:
                continue
            try:
                data, peer = self.udp.recvfrom(512)
            except OSError:
                return
            if peer is None:  # shut down while stopping
                return
            with self._changed:
                self.datagrams.append((data, peer[0]))
                self._changed.notify_all()
            try:
                self.udp.sendto(b"host\n", peer)
            except OSError:
                pass

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.tcp], [], [], 0.2)
            if not ready:
                continue
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(b"host\n")
                except OSError:
                    pass

    def probes_received(self, *, expected: int = 0, timeout: float = 2.0) -> list[str]:
        """The targets of the ``cci-probe`` datagrams received, once ``expected`` arrived or after ``timeout`` s.

        With ``expected=0`` it waits the whole ``timeout``: that is how long a datagram is given to arrive.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [data.decode(errors="replace").split(" ", 1)[-1] for data, _ in self.datagrams
                         if data.startswith(b"cci-probe ")]
                left = deadline - time.monotonic()
                if (expected and len(found) >= expected) or left <= 0:
                    return sorted(found)
                self._changed.wait(left)


class extra_host_address:  # noqa: N801 - used like a function: ``with extra_host_address(...)``
    """Addresses added to this machine on a link of their own, removed (with the link) on exit.

    An address with a prefix length other than 32 becomes a ``local`` route: the whole prefix
    is this machine's without an address in it. The link is one end of a veth pair whose other
    end also stays on this machine (some kernels lack the ``dummy`` link type).
    """

    def __init__(self, *addresses: str) -> None:
        for address in addresses:
            network = ipaddress.ip_network(address, strict=False)
            if any(network.overlaps(forbidden) for forbidden in _FORBIDDEN):
                raise ValueError(f"{address} is in a range this machine uses itself")
        self.addresses = addresses
        self.link = f"{EXTRA_ADDRESS_PREFIX}{secrets.token_hex(4)}"

    def __enter__(self) -> extra_host_address:
        routes = json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
        for address in self.addresses:  # free here, or on a test link of ours
            network = ipaddress.ip_network(address, strict=False)
            taken = [route for route in routes if route.get("dst", "default") != "default"
                     and route.get("dev") not in HOST_LINKS
                     and ipaddress.ip_network(str(route["dst"]), strict=False).overlaps(network)]
            if taken:
                raise RuntimeError(f"{address} is routed on this machine already: {taken[0]}")
        peer = self.link.replace(EXTRA_ADDRESS_PREFIX, EXTRA_ADDRESS_PREFIX[:-1] + "y", 1)
        _run("ip", "link", "add", self.link, "type", "veth", "peer", "name", peer)
        try:
            for link in (self.link, peer):
                _run("ip", "link", "set", link, "up")
            for address in self.addresses:
                if ipaddress.ip_network(address).prefixlen == 32:
                    _run("ip", "addr", "add", f"{ipaddress.ip_network(address).network_address}/32", "dev", self.link)
                else:
                    _run("ip", "route", "add", "local", address, "dev", self.link)
        except BaseException:
            _run("ip", "link", "del", "dev", self.link, check=False)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _run("ip", "link", "del", "dev", self.link, check=False)
