"""TLS for federation: the listener's certificate and the client's verification policy.

With no certificate configured, a self-signed one for the server name is
generated into the data directory (fine for tests and for peers running in
insecure mode; real deployments configure a CA-issued certificate, or put a
reverse proxy in front, see docs/federation.md).
"""
from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer


def ensure_self_signed(cert_path: str, key_path: str, hostname: str) -> None:
    """Write a self-signed certificate for ``hostname`` unless both files exist."""
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        alt = x509.DNSName(hostname)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .sign(key, hashes.SHA256()))
    os.makedirs(os.path.dirname(os.path.abspath(cert_path)), exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def server_context_factory(cert_path: str, key_path: str) -> ssl.CertificateOptions:
    """Options for the federation TLS listener (TLS 1.2+)."""
    with open(cert_path, "rb") as f:
        cert_pem = f.read()
    with open(key_path, "rb") as f:
        key_pem = f.read()
    # A chain file may hold intermediates after the leaf certificate.
    certs = ssl.Certificate.loadPEM(cert_pem)
    chain = []
    marker = b"-----BEGIN CERTIFICATE-----"
    parts = [marker + p for p in cert_pem.split(marker)[1:]]
    for extra in parts[1:]:
        chain.append(ssl.Certificate.loadPEM(extra).original)
    return ssl.CertificateOptions(
        privateKey=ssl.KeyPair.load(key_pem, crypto.FILETYPE_PEM).original,
        certificate=certs.original,
        extraCertChain=chain or None,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


@implementer(IOpenSSLClientConnectionCreator)
class _InsecureCreator:
    """Client TLS that sends SNI but accepts any certificate (insecure mode only)."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname.encode("idna") if not _is_ip(hostname) else b""
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        self._ctx = ctx

    def clientConnectionForTLS(self, tls_protocol: object) -> SSL.Connection:  # noqa: N802 - Twisted's name
        conn = SSL.Connection(self._ctx, None)
        if self._hostname:
            conn.set_tlsext_host_name(self._hostname)
        conn.set_app_data(tls_protocol)
        conn.set_connect_state()
        return conn


def client_tls_creator(hostname: str, insecure: bool) -> IOpenSSLClientConnectionCreator:
    """Verify the peer's certificate against ``hostname`` (SNI = hostname), unless insecure."""
    if insecure:
        return _InsecureCreator(hostname)
    return ssl.optionsForClientTLS(hostname)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
