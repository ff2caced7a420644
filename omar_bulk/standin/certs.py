"""Throwaway certificates for the stand-in server and its clients, made in seconds.

``TestPKI.create(folder)`` writes a private root CA with an issuing CA below it (the shape of the
ISO's own certificates), a server certificate for the loopback names and a client identity in
every form omar-bulk accepts. Nothing here is fit for production use.

Every certificate carries the extensions RFC 5280 requires (key identifiers, basic constraints,
key usage), because omar-bulk verifies strictly: Python 3.13's default context turns on
``VERIFY_X509_STRICT``, which refuses a chain missing them, and omar-bulk does not loosen that.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Password of the stand-in's encrypted client files. They are throwaway test credentials.
DEMO_PASSWORD = "omar-demo"  # noqa: S105  (a throwaway test credential, by design)

LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "omar-bulk stand-in (not CAISO)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    # ECDSA leaves sign the handshake; only the CA signs certificates and revocation lists.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


@dataclass(frozen=True)
class Authority:
    """A certificate authority that can issue server and client certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "omar-bulk stand-in CA") -> Authority:
        """A root: self-signed, allowed one issuing CA below it."""
        return cls._make(common_name, signer=None, path_length=1)

    def subordinate(self, common_name: str) -> Authority:
        """An issuing CA signed by this one, as the ISO's client certificates come from."""
        return Authority._make(common_name, signer=self, path_length=0)

    @classmethod
    def _make(cls, common_name: str, *, signer: Authority | None, path_length: int) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        public = key.public_key()
        issuer_name = signer.cert.subject if signer else _name(common_name)
        issuer_key = signer.key if signer else key
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(issuer_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
            .sign(issuer_key, hashes.SHA256())
        )
        return cls(cert, key)

    def issue(
        self,
        common_name: str,
        *,
        server: bool = False,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf certificate: for loopback server names, or for a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        issuer_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(days=1))
            .not_valid_after(not_after or now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in LOOPBACK_NAMES]
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in LOOPBACK_ADDRESSES]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_client(
    folder: Path,
    stem: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate | None,
    password: str = DEMO_PASSWORD,
) -> None:
    """Write one client identity in every accepted form under ``folder/stem*``.

    ``ca`` is the issuer each file carries after the certificate, as a full-chain export
    does; None writes the certificate alone, as a careless export does.
    """
    issuers = [ca] if ca is not None else []
    chain = pem(cert) + b"".join(pem(c) for c in issuers)
    _write(folder / f"{stem}.pem", chain + key_pem(key))
    _write(folder / f"{stem}-cert.pem", chain)
    _write(folder / f"{stem}-key.pem", key_pem(key))
    _write(folder / f"{stem}-key-encrypted.pem", key_pem(key, password))
    p12 = pkcs12.serialize_key_and_certificates(
        stem.encode(), key, cert, issuers, serialization.BestAvailableEncryption(password.encode())
    )
    _write(folder / f"{stem}.p12", p12)
    nopass = pkcs12.serialize_key_and_certificates(
        stem.encode(), key, cert, issuers, serialization.NoEncryption()
    )
    _write(folder / f"{stem}-nopass.p12", nopass)


@dataclass(frozen=True)
class TestPKI:
    """The files of one stand-in PKI, by role."""

    __test__ = False  # not a pytest test class, despite the name

    folder: Path
    authority: Authority
    #: The issuing CA below ``authority`` that signs the clients: the server trusts only the
    #: root, so a client file must carry this certificate too (as at the ISO).
    issuing: Authority

    @property
    def ca(self) -> Path:
        """The root that signs the server and the issuing CA; give it to ``--ca-bundle``."""
        return self.folder / "ca.pem"

    @property
    def server(self) -> Path:
        return self.folder / "server.pem"

    @property
    def client_p12(self) -> Path:
        """The client identity as a browser exports it: PKCS#12 under ``DEMO_PASSWORD``."""
        return self.folder / "client.p12"

    @property
    def client_pem(self) -> Path:
        return self.folder / "client.pem"

    @classmethod
    def create(cls, folder: Path) -> TestPKI:
        """Make a root and an issuing CA, a loopback server certificate and a client identity
        (carrying its issuer) in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        authority = Authority.create()
        issuing = authority.subordinate("omar-bulk stand-in issuing CA")
        _write(folder / "ca.pem", pem(authority.cert))
        server_cert, server_key = authority.issue("localhost", server=True)
        _write(folder / "server.pem", pem(server_cert) + pem(authority.cert) + key_pem(server_key))
        client_cert, client_key = issuing.issue("omar-bulk demo client")
        write_client(folder, "client", client_cert, client_key, issuing.cert)
        return cls(folder, authority, issuing)

    def client(
        self,
        stem: str,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        with_issuer: bool = True,
    ) -> Path:
        """Issue another client identity (say, an expired one, or one exported without its
        issuer); return its PEM path."""
        cert, key = self.issuing.issue(stem, not_before=not_before, not_after=not_after)
        write_client(self.folder, stem, cert, key, self.issuing.cert if with_issuer else None)
        return self.folder / f"{stem}.pem"


__all__ = [
    "DEMO_PASSWORD",
    "LOOPBACK_ADDRESSES",
    "LOOPBACK_NAMES",
    "Authority",
    "TestPKI",
    "key_pem",
    "pem",
    "write_client",
]
