"""Every TLS decision of a run: the client identity, its validity, and the one SSL context.

The client certificate comes as PKCS#12 (``.p12``/``.pfx``, as browsers export it) or as PEM
holding the certificate and possibly the key, with an optional separate PEM key that may be
encrypted. Python's ``ssl`` reads only files, so the identity is parsed here with
``cryptography`` and handed to OpenSSL re-encrypted under a one-time random password. On Linux
it goes through an anonymous in-memory file (``memfd_create``) read by its ``/proc/self/fd``
path: nothing is written to any file system, and the kernel frees it with the process, even after
``kill -9``. Elsewhere it is a 0600 temporary file that lives only for the duration of
``load_cert_chain``; a kill in that instant leaves it behind, its key still encrypted under a
password that died with the process. The user's password is asked for only when a file needs one
and is never stored or printed; ``forbid_core_dumps`` keeps both out of crash dumps.

Server verification is always on: the system trust store plus ``--ca-bundle``. There is no
switch to turn it off.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import stat
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from .errors import CertificateError, UsageError
from .userfiles import read_whole

PasswordSource = Callable[[str], str | None]
"""Called with a description of what needs unlocking; returns the password or None."""

#: Warn when the client certificate expires within this time: renewing one at the ISO takes
#: weeks, so ``fetch`` and ``check`` both start saying so a month ahead.
EXPIRY_WARNING = timedelta(days=30)
#: The largest certificate, key or CA bundle file read. A client certificate with its chain
#: takes a few kilobytes, a system's whole CA bundle about 200 KiB; a larger file is a mistake
#: (or a device that never ends) and is refused without being read to its end.
MAX_CERT_FILE = 1 << 20

#: Said wherever an incomplete chain is the likely cause of a refusal (``missing_issuer``).
INCOMPLETE_CHAIN = "the client certificate's chain is incomplete"
CHAIN_FIX = (
    "export the full chain: as PKCS#12 with 'include all certificates in the certification"
    " path', or append the issuing CA's PEM certificate to the file given as --cert"
)


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """A client certificate chain and its private key, parsed and checked to belong together."""

    subject: str
    not_before: datetime
    not_after: datetime
    source: str
    chain: tuple[x509.Certificate, ...] = field(repr=False)
    key: PrivateKeyTypes = field(repr=False)

    def validity_warnings(self, now: datetime | None = None) -> list[str]:
        """Raise CertificateError outside the validity period; warn when expiry is near."""
        now = now or datetime.now(UTC)
        if now < self.not_before:
            raise CertificateError(
                f"client certificate {self.source} is not valid until "
                f"{self.not_before:%Y-%m-%d %H:%M} UTC"
            )
        if now >= self.not_after:
            raise CertificateError(
                f"client certificate {self.source} expired on {self.not_after:%Y-%m-%d %H:%M} UTC;"
                " ask your certificate administrator for a new one"
            )
        left = self.not_after - now
        if left <= EXPIRY_WARNING:
            return [
                f"client certificate {self.source} expires in {left.days} day(s), "
                f"on {self.not_after:%Y-%m-%d}"
            ]
        return []

    @property
    def missing_issuer(self) -> str | None:
        """The issuer of the certificate at the end of the chain when the file does not carry
        it, or None when the chain reaches a self-issued certificate.

        OMAR-Online's certificates come from an issuing CA below the root, and the server knows
        only the root: a chain that stops at the user's certificate is refused with the TLS
        alert "unknown CA", which on its own points the user at the wrong file. A chain may
        stop one step below the root (the server has the root), so only the leaf's own issuer
        is required.
        """
        leaf = self.chain[0]
        if leaf.issuer == leaf.subject:
            return None
        if any(c.subject == leaf.issuer for c in self.chain[1:]):
            return None
        return leaf.issuer.rfc4514_string()

    def chain_lines(self) -> list[str]:
        """The chain this identity sends, leaf first: each subject, then a gap if any."""
        lines = [c.subject.rfc4514_string() for c in self.chain]
        missing = self.missing_issuer
        if missing is not None:
            lines.append(f"issuer not included: {missing}")
        return lines

    def chain_warnings(self) -> list[str]:
        """A warning when the chain is incomplete (see ``missing_issuer``)."""
        missing = self.missing_issuer
        if missing is None:
            return []
        return [f"{INCOMPLETE_CHAIN}: {self.source} holds no certificate of {missing}; {CHAIN_FIX}"]

    def install(self, context: ssl.SSLContext) -> None:
        """Load this identity into ``context`` without ever writing the key unencrypted."""
        one_time = secrets.token_urlsafe(32).encode()
        key_pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(one_time),
        )
        chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)
        try:
            with _identity_file(chain_pem + key_pem) as name:
                context.load_cert_chain(name, password=one_time)
        except ssl.SSLError as exc:
            raise CertificateError(
                f"OpenSSL refused the client certificate {self.source}: {exc.reason}"
            ) from None


#: The environment variables a password may come from: the password itself, or a file holding
#: it (the ``_FILE`` convention of services: systemd's ``LoadCredential=``, container secrets).
PASSWORD_VARIABLE = "OMAR_CERT_PASSWORD"  # noqa: S105  (a name, not a password)
PASSWORD_FILE_VARIABLE = "OMAR_CERT_PASSWORD_FILE"  # noqa: S105
#: A password file larger than this is not a password file.
MAX_PASSWORD_FILE = 1 << 16


def password_file(environ: Mapping[str, str]) -> Path | None:
    """The file ``OMAR_CERT_PASSWORD_FILE`` names, checked to exist; None when unset.

    Raises ``UsageError`` (exit 2) when it is missing, or when ``OMAR_CERT_PASSWORD`` is set
    too: which of the two would win is a guess nobody should have to make.
    """
    name = environ.get(PASSWORD_FILE_VARIABLE)
    if name is None:
        return None
    if PASSWORD_VARIABLE in environ:
        raise UsageError(
            f"both {PASSWORD_VARIABLE} and {PASSWORD_FILE_VARIABLE} are set: unset one of them"
        )
    if not name:
        raise UsageError(f"{PASSWORD_FILE_VARIABLE} is set but empty: give the file's path")
    path = Path(name)
    try:
        os.stat(path)
    except OSError as exc:
        raise UsageError(
            f"{PASSWORD_FILE_VARIABLE} {path}: {exc.strerror or 'cannot be read'}"
        ) from None
    return path


def read_password_file(path: Path) -> str:
    """The password in ``path``: its first line, without its line ending (``\n`` or
    ``\r\n``). Errors name the file, never its content."""

    def fail(why: str) -> CertificateError:
        return CertificateError(f"{PASSWORD_FILE_VARIABLE} {path}: {why}")

    data = read_whole(path, MAX_PASSWORD_FILE, fail)
    line = data.split(b"\n", 1)[0].removesuffix(b"\r")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("the password is not UTF-8 text") from None


def readers(path: Path) -> tuple[int, str | None]:
    """``path``'s permission bits, and which group or others besides its owner can read it
    ("its group", "every user", a group its ACL names, or None). Raises ``OSError`` when it
    cannot be looked at.

    A file with a POSIX ACL shows the ACL's mask as its group bits: systemd's
    ``LoadCredential=`` writes a 0400 file and grants the service's user read access by an
    ACL entry, and ``stat`` says 0440 although its group cannot read it. So the ACL's own
    entries decide where there is one; a user it names one by one was granted access on
    purpose (systemd names the service's user) and is not counted."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    acl = _access_acl(path)
    if acl is None:
        bits = (("its group", 0o040), ("every user", 0o004))
        who = [name for name, bit in bits if mode & bit]
        return mode, " and ".join(who) or None
    mask = next((perm for tag, perm, _ in acl if tag == _ACL_MASK), 7)
    who = []
    for tag, perm, ident in acl:
        if tag == _ACL_OTHER and perm & 4:
            who.append("every user")
        elif not perm & mask & 4:
            continue
        elif tag == _ACL_GROUP_OBJ:
            who.append("its group")
        elif tag == _ACL_GROUP:
            who.append(f"group {ident} (its ACL)")
    return mode, " and ".join(who) or None


_ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 0x04, 0x08, 0x10, 0x20


def _access_acl(path: Path) -> list[tuple[int, int, int]] | None:
    """The POSIX access ACL of ``path`` as (tag, permissions, id) entries (Linux's
    ``system.posix_acl_access`` attribute: a version, then 8-byte entries), or None where
    there is none or it cannot be read (then the mode bits are the whole story)."""
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:
        return None
    try:
        raw = getxattr(path, "system.posix_acl_access")
    except OSError:
        return None
    if len(raw) < 4 or (len(raw) - 4) % 8 or struct.unpack_from("<I", raw)[0] != 2:
        return None
    return [struct.unpack_from("<HHI", raw, at) for at in range(4, len(raw), 8)]


def password_file_warning(path: Path) -> str | None:
    """A warning when people other than its owner can read the password file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a device, a FIFO, a folder: reading it says what is wrong
        mode, others = readers(path)
    except OSError:
        return None  # reading it will say what is wrong
    if others is None:
        return None
    return f"{PASSWORD_FILE_VARIABLE} {path} is {mode:04o}: {others} can read it; chmod 600 {path}"


@contextlib.contextmanager
def _identity_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read ``data`` from, gone when the block ends."""
    memory = _memory_file(data)
    if memory is not None:
        try:
            yield f"/proc/self/fd/{memory}"
        finally:
            os.close(memory)
        return
    fd, name = tempfile.mkstemp(prefix="omar-bulk-", suffix=".pem")  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield name
    finally:
        os.unlink(name)


def _memory_file(data: bytes) -> int | None:
    """An anonymous in-memory file holding ``data`` (Linux), or None where there is none."""
    create = getattr(os, "memfd_create", None)
    if create is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd: int = create("omar-bulk-identity", getattr(os, "MFD_CLOEXEC", 0))
    except OSError:  # a sandbox may forbid the call: fall back to the temporary file
        return None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        os.close(fd)
        return None
    return fd


def forbid_core_dumps() -> None:
    """No core dump of this process from now on: it is about to hold a decrypted key and
    perhaps the user's password, which a dump would write to disk in clear.

    The hard limit goes to zero too, so nothing later in the process can raise it again. On
    Linux the process is also marked not dumpable, which keeps other processes of the same user
    from reading its memory through ``/proc`` or ptrace. Best effort: where a platform lacks a
    call, it is skipped.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


_PR_SET_DUMPABLE = 4  # from <linux/prctl.h>


def load_identity(
    cert: Path, key: Path | None = None, *, password: PasswordSource | None = None
) -> ClientIdentity:
    """Read a PKCS#12 or PEM client certificate (and key), asking ``password`` if needed."""
    data = _read(cert, "certificate")
    if b"-----BEGIN" not in data:
        if key is not None:
            raise CertificateError(f"--key is for PEM certificates; {cert} is PKCS#12")
        chain, private = _load_pkcs12(cert, data, password)
    else:
        chain = _load_pem_chain(cert, data)
        if key is not None:
            private = _load_pem_key(key, _read(key, "key"), password)
        elif b"PRIVATE KEY-----" in data:
            private = _load_pem_key(cert, data, password)
        else:
            raise CertificateError(
                f"{cert} holds a certificate but no private key: give the key with --key"
            )
    leaf = chain[0]
    if _public(leaf.public_key()) != _public(private.public_key()):
        raise CertificateError(f"the private key does not belong to the certificate in {cert}")
    return ClientIdentity(
        subject=leaf.subject.rfc4514_string(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        source=str(cert),
        chain=tuple(chain),
        key=private,
    )


def create_ssl_context(
    identity: ClientIdentity | None, *, ca_bundle: Path | None = None
) -> ssl.SSLContext:
    """One client context for the run: TLS 1.2 or newer, server verified, our identity loaded."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle is not None:
        # Read here, bounded, then handed to OpenSSL as a file of its own: OpenSSL reading the
        # path itself would read a device such as /dev/zero without end, and a pipe's
        # content can be read only once.
        bundle = read_whole(
            ca_bundle, MAX_CERT_FILE, lambda why: UsageError(f"--ca-bundle {ca_bundle}: {why}")
        )
        try:
            with _identity_file(bundle) as name:
                context.load_verify_locations(cafile=name)
        except (ssl.SSLError, ValueError) as exc:
            raise UsageError(
                f"--ca-bundle {ca_bundle}: not a PEM certificate file ({exc})"
            ) from None
    if identity is not None:
        identity.install(context)
    return context


#: OpenSSL's reasons when client and server share no protocol version (a server stuck on
#: TLS 1.1 answers our 1.2-or-newer hello with the alert "protocol version").
_NO_COMMON_VERSION = ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE")


def no_common_version(reason: str) -> str | None:
    """What a failed handshake means when OpenSSL's ``reason`` says the server offers no TLS
    version ``create_ssl_context`` accepts; None when it is about something else. An alert
    too, but about the protocol: nothing to do with our certificate."""
    if any(word in reason.upper() for word in _NO_COMMON_VERSION):
        return f"the server offers no TLS version omar-bulk accepts (1.2 or newer): {reason}"
    return None


def _read(path: Path, what: str) -> bytes:
    return read_whole(
        path, MAX_CERT_FILE, lambda why: CertificateError(f"{what} file {path}: {why}")
    )


def _public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_pkcs12(
    path: Path, data: bytes, password: PasswordSource | None
) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    if not data.startswith(b"\x30"):  # every DER structure, PKCS#12 included, is a SEQUENCE
        raise CertificateError(f"{path} is not a certificate (neither PEM nor PKCS#12)")
    parsed = None
    for attempt in (None, b""):
        try:
            parsed = pkcs12.load_key_and_certificates(data, attempt)
            break
        except ValueError:
            continue
    if parsed is None:
        secret = password(f"password for {path}") if password else None
        if secret is None:
            raise CertificateError(
                f"{path} is protected by a password: set OMAR_CERT_PASSWORD"
                " (or OMAR_CERT_PASSWORD_FILE), or run on a terminal to be asked"
            )
        try:
            parsed = pkcs12.load_key_and_certificates(data, secret.encode())
        except ValueError:
            raise CertificateError(
                f"cannot open {path}: wrong password, or not a PKCS#12 file"
            ) from None
    private, leaf, extra = parsed
    if leaf is None or private is None:
        raise CertificateError(f"{path} holds no client certificate with its private key")
    return [leaf, *extra], private


def _load_pem_chain(path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        if b"PRIVATE KEY-----" in data:
            raise CertificateError(
                f"{path} holds a private key but no certificate: give the certificate with --cert"
                " and the key with --key"
            ) from None
        raise CertificateError(f"{path} is not a PEM certificate") from None
    return chain


def _load_pem_key(path: Path, data: bytes, password: PasswordSource | None) -> PrivateKeyTypes:
    if b"PRIVATE KEY-----" not in data:
        raise CertificateError(f"{path} holds no PEM private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        pass  # encrypted: ask below
    except ValueError:
        raise CertificateError(f"{path}: the private key cannot be read") from None
    secret = password(f"password for the key in {path}") if password else None
    if secret is None:
        raise CertificateError(
            f"the key in {path} is encrypted: set OMAR_CERT_PASSWORD (or"
            " OMAR_CERT_PASSWORD_FILE), or run on a terminal to be asked"
        )
    try:
        return serialization.load_pem_private_key(data, password=secret.encode())
    except (ValueError, TypeError):
        raise CertificateError(f"cannot decrypt the key in {path}: wrong password") from None


__all__ = [
    "CHAIN_FIX",
    "EXPIRY_WARNING",
    "INCOMPLETE_CHAIN",
    "MAX_CERT_FILE",
    "MAX_PASSWORD_FILE",
    "PASSWORD_FILE_VARIABLE",
    "PASSWORD_VARIABLE",
    "ClientIdentity",
    "PasswordSource",
    "create_ssl_context",
    "forbid_core_dumps",
    "load_identity",
    "no_common_version",
    "password_file",
    "password_file_warning",
    "read_password_file",
    "readers",
]
