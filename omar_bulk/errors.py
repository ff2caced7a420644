"""Every error omar-bulk raises, in one tree.

    OmarBulkError                  base; ``exit_code`` says how the CLI ends
    ├── UsageError (2)             bad input or configuration, found before any request
    │   ├── ManifestError          a manifest problem, with file and line
    │   └── CertificateError       the client certificate cannot be used
    ├── AuthError (3)              the server or TLS refused us: stop the whole run
    │   └── ProxyAuthError         the proxy wants credentials, or other ones (407)
    ├── LocalWriteError (4)        we cannot write where we must (disk full, permission)
    ├── UnreachableError (1)       no session could be opened: nothing was attempted
    │   └── ProxyError             the proxy cannot be reached or refuses the tunnel
    └── ItemError                  one item failed; becomes a result, never ends the run
        ├── RetryableError         worth another attempt (network, 5xx, 429, cut body)
        │   ├── ConnectionDropped  closed or reset with no answer at all
        │   │   └── TunnelCut      through a proxy, before the server's TLS answered
        │   └── SessionExpired     the login session is gone: log in again, then retry
        └── PermanentError         another attempt would get the same answer (404, HTML page)
            └── UnsafePathError    a symbolic link (or other stranger) planted inside OUT

aiohttp and OS errors are translated into this tree in exactly one place each:
``session.classify_client_error`` and ``storage.translate_os_error``; what an HTTP
answer amounts to is decided in ``answers``.
"""

from __future__ import annotations


class OmarBulkError(Exception):
    """Base of every omar-bulk error."""

    exit_code = 1


class UsageError(OmarBulkError):
    """Bad input or configuration, detected before anything is sent."""

    exit_code = 2


class ManifestError(UsageError):
    """A manifest (or command-line plan) problem, located by file and line."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.detail = message
        super().__init__(f"{where}: {message}" if where else message)


class CertificateError(UsageError):
    """The client certificate or key cannot be loaded or is not valid now."""


class AuthError(OmarBulkError):
    """The server refused our certificate or session, or its certificate does not verify."""

    exit_code = 3


class LocalWriteError(OmarBulkError):
    """Writing to the output folder failed (disk full, permission, read-only file system)."""

    exit_code = 4


class UnreachableError(OmarBulkError):
    """The server could not be reached to open a session, even after retries."""

    exit_code = 1


class ProxyAuthError(AuthError):
    """The proxy answered 407: it needs credentials, or refused the ones given. Every other
    attempt would get the same answer (and could lock the account), so the run stops."""


class ProxyError(UnreachableError):
    """The proxy cannot be reached, or refuses to open a tunnel to the server (a 403 for a
    port its rules do not allow). A matter for whoever runs the proxy, not the ISO's server
    being busy: the run stops at once instead of retrying."""


class ItemError(OmarBulkError):
    """One item's attempt failed; recorded as that item's result."""


class RetryableError(ItemError):
    """A failure another attempt may cure. ``pushback``: the server asked us to slow down."""

    pushback = False

    def __init__(
        self, message: str, *, retry_after: float | None = None, pushback: bool | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        if pushback is not None:
            self.pushback = pushback


class ConnectionDropped(RetryableError):
    """The server closed or reset the connection without answering.

    Usually a blip; when it happens to every attempt at opening the session, it is how some
    servers refuse a client certificate without a TLS alert. In a burst, it is push-back.
    """

    pushback = True


class TunnelCut(ConnectionDropped):
    """Through a proxy, the connection closed or reset before the server's TLS handshake
    was done: the proxy may have cut the tunnel, so unlike a drop after the handshake it
    says nothing about our client certificate."""


class SessionExpired(RetryableError):
    """The server answered with its login page or a redirect: the session must be reopened."""


class PermanentError(ItemError):
    """A failure that another attempt would only repeat."""


class UnsafePathError(PermanentError):
    """Something planted inside the output folder where omar-bulk would write: a symbolic link,
    or a file where a folder belongs. It is never followed; this item fails, the run goes on."""


__all__ = [
    "AuthError",
    "CertificateError",
    "ConnectionDropped",
    "ItemError",
    "LocalWriteError",
    "ManifestError",
    "OmarBulkError",
    "PermanentError",
    "ProxyAuthError",
    "ProxyError",
    "RetryableError",
    "SessionExpired",
    "TunnelCut",
    "UnreachableError",
    "UnsafePathError",
    "UsageError",
]
