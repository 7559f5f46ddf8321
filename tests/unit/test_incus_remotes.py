"""The remotes of the incus CLI (``[incus] remote``, ``--remote``): read from its config.yml as ``incus remote add``
writes it, bad ones refused in one line with the fix; a pinned server certificate compared whole."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest

from cci_core.cli.options import GlobalOptions
from cci_core.config import Override, load_config
from cci_core.errors import ConfigError
from cci_builtin_plugins.incus.connection import Endpoint, UntrustedServer
from cci_builtin_plugins.incus.remotes import LOCAL, config_directory, find_remote
from cci_builtin_plugins.incus.settings import IncusSettings

CONFIG = """\
default-remote: local
remotes:
  images:
    addr: https://images.linuxcontainers.org
    protocol: simplestreams
    public: true
  local:
    addr: unix://
    protocol: incus
    public: false
  big:
    addr: https://10.0.0.9:8443
    auth_type: tls
    project: agents
    protocol: incus
    public: false
  sso:
    addr: https://sso.example:8443
    auth_type: oidc
    protocol: incus
  odd:
    addr: "tcp://10.0.0.9:8443"
    protocol: incus
aliases: {}
"""


def incus_conf(directory: Path, text: str = CONFIG, *, client: bool = True, pinned: tuple[str, ...] = ("big",)) -> Path:
    """An incus CLI config directory as 'incus remote add' leaves it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yml").write_text(text)
    if client:
        (directory / "client.crt").write_text("cert")
        (directory / "client.key").write_text("key")
    (directory / "servercerts").mkdir(exist_ok=True)
    for name in pinned:
        (directory / "servercerts" / f"{name}.crt").write_text("pinned")
    return directory


def test_a_tls_remote_gives_its_address_project_client_certificate_and_pinned_server_certificate(tmp_path: Path) -> None:
    conf = incus_conf(tmp_path / "incus")
    remote = find_remote("big", {"INCUS_CONF": str(conf)})
    assert remote.url == "https://10.0.0.9:8443" and remote.project == "agents"
    assert (remote.client_cert, remote.client_key) == (str(conf / "client.crt"), str(conf / "client.key"))
    assert remote.server_cert == str(conf / "servercerts" / "big.crt")
    # a server with a certificate from a CA the system trusts has none pinned
    (conf / "servercerts" / "big.crt").unlink()
    assert find_remote("big", {"INCUS_CONF": str(conf)}).server_cert is None


def test_the_config_directory_is_incus_conf_then_the_users_config_directory(tmp_path: Path) -> None:
    assert config_directory({"INCUS_CONF": "/x/incus", "HOME": "/h"}) == Path("/x/incus")
    assert config_directory({"XDG_CONFIG_HOME": "/cfg", "HOME": "/h"}) == Path("/cfg/incus")
    assert config_directory({"HOME": "/h"}) == Path("/h/.config/incus")
    incus_conf(tmp_path / ".config" / "incus")
    assert find_remote("big", {"HOME": str(tmp_path)}).project == "agents"


def test_local_is_the_local_daemon_even_without_a_config_file(tmp_path: Path) -> None:
    assert find_remote(LOCAL, {"INCUS_CONF": str(tmp_path / "none")}).url is None
    local = find_remote(LOCAL, {"INCUS_CONF": str(incus_conf(tmp_path / "a"))})
    assert (local.url, local.socket) == (None, None)  # (the socket found as without a remote)
    conf = incus_conf(tmp_path / "b", CONFIG.replace("addr: unix://\n", "addr: unix:///run/incus/unix.socket\n"))
    assert find_remote(LOCAL, {"INCUS_CONF": str(conf)}).socket == "/run/incus/unix.socket"


@pytest.mark.parametrize(("name", "text", "client", "fragments"), [
    ("nope", CONFIG, True, ("no Incus remote 'nope' in", "it has: big, images, local, odd, sso", "incus remote add")),
    ("nope", None, True, ("no Incus remote 'nope' in", "it has: none")),
    ("images", CONFIG, True, ("'images' is an image server (simplestreams), not an Incus server",)),
    ("sso", CONFIG, True, ("'sso' logs in with oidc", "--auth-type=tls")),
    ("odd", CONFIG, True, ("'odd' has the address 'tcp://10.0.0.9:8443'", "not an https:// one")),
    ("big", CONFIG, False, ("client certificate", "client.crt does not exist", "first 'incus remote add'")),
    ("big", "remotes:\n  big: [\n", True, ("is not valid YAML (line 3)",)),
    ("big", "remotes: [a, b]\n", True, ("'remotes' is not a mapping",)),
])
def test_a_remote_cci_cannot_use_is_one_line_with_the_fix(tmp_path: Path, name: str, text: str | None, client: bool,
                                                          fragments: tuple[str, ...]) -> None:
    conf = incus_conf(tmp_path / "incus", text or "", client=client)
    if text is None:
        (conf / "config.yml").unlink()
    with pytest.raises(ConfigError) as caught:
        find_remote(name, {"INCUS_CONF": str(conf)})
    assert caught.value.key == "incus.remote" and "\n" not in str(caught.value)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_the_remote_takes_the_place_of_url_and_certificates_and_its_project_unless_one_was_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = incus_conf(tmp_path / "incus")
    monkeypatch.setenv("INCUS_CONF", str(conf))
    monkeypatch.delenv("CCI_INCUS_PROJECT", raising=False)
    flags = GlobalOptions(remote="big").overrides()
    assert flags == [Override("incus.remote", "big", "--remote")]
    settings = IncusSettings.of(load_config(tmp_path, overrides=flags))
    assert (settings.url, settings.project, settings.server_cert) == \
        ("https://10.0.0.9:8443", "agents", str(conf / "servercerts" / "big.crt"))
    monkeypatch.setenv("CCI_INCUS_PROJECT", "mine")
    assert IncusSettings.of(load_config(tmp_path, overrides=flags)).project == "mine"
    # local: back to this host's socket, whatever [incus] url says
    monkeypatch.setenv("CCI_INCUS_URL", "https://elsewhere:8443")
    local = IncusSettings.of(load_config(tmp_path, overrides=GlobalOptions(remote="local").overrides()))
    assert local.url is None


# --- a pinned server certificate ------------------------------------------------------------------------------


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def tls_server(cert: Path, key: Path) -> tuple[int, threading.Thread]:
    """A loopback TLS server (a certificate for another name than the address, as Incus's own) that completes
    one handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            try:
                with context.wrap_socket(connection, server_side=True) as secure:
                    secure.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_a_pinned_server_certificate_is_trusted_for_any_name_and_another_one_is_refused(tmp_path: Path) -> None:
    server_cert, server_key = self_signed(tmp_path, "incus-server")
    other, _ = self_signed(tmp_path, "someone-else")
    client = self_signed(tmp_path, "client")
    port, thread = tls_server(server_cert, server_key)
    connection = Endpoint(url=f"https://127.0.0.1:{port}", cert=tuple(map(str, client)),  # type: ignore[arg-type]
                          server_cert=str(server_cert)).open(timeout=10)
    connection.close()
    thread.join(10)

    port, thread = tls_server(server_cert, server_key)
    with pytest.raises(UntrustedServer, match="offered a certificate other than the one pinned in"):
        Endpoint(url=f"https://127.0.0.1:{port}", cert=tuple(map(str, client)),  # type: ignore[arg-type]
                 server_cert=str(other)).open(timeout=10)
    thread.join(10)

    port, thread = tls_server(server_cert, server_key)  # nothing pinned: the system CAs, which do not know it
    endpoint = Endpoint(url=f"https://127.0.0.1:{port}", cert=tuple(map(str, client)))  # type: ignore[arg-type]
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        endpoint.open(timeout=10)
    error = endpoint.connection_error(caught.value)
    assert isinstance(error, UntrustedServer) and "is not trusted (self-signed certificate)" in error.message
    assert "incus remote add" in (error.hint or "")
    thread.join(10)
