"""The stand-in's throwaway certificates pass the strict RFC 5280 checks of Python 3.13+."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from omar_bulk.standin.certs import TestPKI, key_pem, pem
from omar_bulk.tls import create_ssl_context

HANDSHAKE_DEADLINE = 10.0


def _strict(purpose: ssl.Purpose, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose, cafile=str(ca))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def _handshake(server_side: ssl.SSLContext, client_side: ssl.SSLContext) -> None:
    """Run one TLS handshake over a socket pair; raise what either side refused."""
    near, far = socket.socketpair()
    near.settimeout(HANDSHAKE_DEADLINE)
    far.settimeout(HANDSHAKE_DEADLINE)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_side.wrap_socket(far, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_side.wrap_socket(near, server_hostname="localhost") as tls:
            tls.sendall(b"x")
    finally:
        thread.join(HANDSHAKE_DEADLINE)
        far.close()
    assert not thread.is_alive(), (
        f"server side of the handshake still running after {HANDSHAKE_DEADLINE}s"
    )
    if errors:
        raise errors[0]


@pytest.mark.parametrize("client", ["client", "second-client"])
def test_server_and_client_certificates_verify_under_strict_checks(
    pki: TestPKI, client: str
) -> None:
    """Both ends verify each other with VERIFY_X509_STRICT on, whatever the Python version."""
    if client != "client":
        pki.client(client)
    server_side = _strict(ssl.Purpose.CLIENT_AUTH, pki.ca)
    server_side.verify_mode = ssl.CERT_REQUIRED
    server_side.load_cert_chain(str(pki.server))
    client_side = _strict(ssl.Purpose.SERVER_AUTH, pki.ca)
    client_side.load_cert_chain(str(pki.folder / f"{client}.pem"))
    _handshake(server_side, client_side)


def test_a_certificate_without_key_identifiers_is_refused_under_strict_checks(
    tmp_path: Path,
) -> None:
    """The check above can fail: strict verification refuses a leaf missing RFC 5280 fields."""
    pki = TestPKI.create(tmp_path / "pki")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    bare = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(pki.authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(pki.authority.key, hashes.SHA256())
    )
    (tmp_path / "bare.pem").write_bytes(pem(bare) + key_pem(key))
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(str(tmp_path / "bare.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_side, _strict(ssl.Purpose.SERVER_AUTH, pki.ca))


def test_omar_bulk_never_loosens_the_default_verification_flags(pki: TestPKI) -> None:
    """Whatever this Python verifies by default (strict X.509 on 3.13+), omar-bulk keeps."""
    default = ssl.create_default_context(ssl.Purpose.SERVER_AUTH).verify_flags
    ours = create_ssl_context(None, ca_bundle=pki.ca).verify_flags
    assert ours & default == default
    assert create_ssl_context(None).verify_mode == ssl.CERT_REQUIRED
