"""What the server's answers mean: every status code, header and page, judged in one place.

Nothing here sends, reads or writes: each function takes what an answer said (its status line
and headers as a ``Head``, a body's first bytes) and returns the error it amounts to, or None
when the answer is what we asked for. The engine and the session act on the verdicts; the
table-driven tests in ``tests/unit/test_answers.py`` pin every row without a server.

    status      at login                       on a download
    200         session open                   data (unless the body is an HTML page)
    3xx         follow, https and same origin  the session expired (log in again)
    400 + "certificate" page  certificate refused (3)  the item failed
    401, 403    certificate refused (3)        certificate not allowed to download (3)
    429, 503    retry, slow down               retry, slow down (honour Retry-After)
    other 5xx   retry                          retry
    other 4xx   server unusable (1)            the item failed (permanent)
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from .errors import (
    AuthError,
    OmarBulkError,
    PermanentError,
    RetryableError,
    SessionExpired,
    UnreachableError,
)
from .text import printable

#: Never wait longer than this for one Retry-After, whatever the server asks: a longer wait
#: is cut to this, and the attempt still counts against ``--retries``.
RETRY_AFTER_CAP = 600.0
#: Redirects followed while opening a session before the login is declared a loop.
MAX_LOGIN_REDIRECTS = 5
#: How much of an HTML page is searched for a login form or a title.
PAGE_SCAN = 65536
#: Content-Encodings whose integrity the body itself proves (gzip's CRC-32 and length
#: trailer; zlib's Adler-32), so they can be decoded into exactly the bytes the server meant.
DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})

_LOGIN_MARKERS = re.compile(
    rb"log\s*-?\s*in|sign\s*-?\s*in|session\s+(has\s+)?(expired|timed\s*out)", re.IGNORECASE
)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(rb"<[^>]+>")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Head:
    """An answer's status line and the headers that decide what it means."""

    status: int
    reason: str = ""
    content_type: str | None = None
    content_encoding: str | None = None
    content_length: int | None = None
    chunked: bool = False
    location: str | None = None
    retry_after: str | None = None

    @property
    def said(self) -> str:
        """``HTTP 503 Service Unavailable``, the reason phrase made safe to print."""
        reason = printable(self.reason, limit=80)
        return f"HTTP {self.status}" + (f" {reason}" if reason else "")

    @property
    def framed(self) -> bool:
        """Does the body say where it ends (Content-Length or chunked)? Without either it
        ends when the connection closes, and a cut cannot be told from the end."""
        return self.chunked or self.content_length is not None

    @property
    def encoding(self) -> str | None:
        """The Content-Encoding in lower case, None for none or ``identity``."""
        value = (self.content_encoding or "").strip().lower()
        return None if value in ("", "identity") else value


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _slow_down(head: Head, what: str) -> RetryableError:
    return RetryableError(
        f"{what} {head.said}" if what else head.said,
        retry_after=parse_retry_after(head.retry_after),
        pushback=head.status in (429, 503),
    )


def judge_login(head: Head, body: bytes, base_url: str) -> OmarBulkError | None:
    """The verdict on the answer to the session-opening request (redirects already followed).

    None: the session is open. A 400 page that mentions the certificate is how nginx and
    others refuse a client certificate, so it is fatal like 401 and 403.
    """
    status = head.status
    if status in (401, 403):
        return AuthError(
            f"the server refused the login with {head.said}: check that the certificate is"
            " registered for OMAR-Online"
        )
    if status == 400 and b"certificate" in body[:PAGE_SCAN].lower():
        return AuthError(f"the server refused our client certificate: {page_headline(body)!r}")
    if status == 429 or status >= 500:
        return _slow_down(head, "login answered")
    if 300 <= status < 400:
        return UnreachableError(
            f"login at {printable(base_url)} answered {head.said} with no way on"
        )
    if status >= 400:
        return UnreachableError(f"login at {printable(base_url)} answered {head.said}")
    return None


def login_redirect(current: str, head: Head) -> str:
    """Where a login redirect leads, or AuthError if following it would leave https or the
    server's origin: the session cookie and our requests never go anywhere else."""
    if not head.location:
        raise UnreachableError(f"the login answered {head.said} without saying where to go")
    try:
        target = urljoin(current, head.location.strip())
        here, there = urlsplit(current), urlsplit(target)
        # .port raises on a port out of range or not a number; hostname on a broken IPv6
        where, ours = (there.hostname, there.port or 443), (here.hostname, here.port or 443)
    except ValueError:
        raise UnreachableError(
            f"the login redirected to an address that cannot be used"
            f" ({printable(head.location, limit=120)!r}): the server is misconfigured"
        ) from None
    if there.scheme != "https":
        raise AuthError(
            f"the server redirected the login to {printable(_origin(target))}, which is not https:"
            " omar-bulk sends nothing over plain http; check --base-url"
        )
    if where != ours:
        raise AuthError(
            f"the server redirected the login to another server ({printable(_origin(target))});"
            " omar-bulk keeps the session with the server it was given: check --base-url"
        )
    return target


def redirect_loop(hops: list[str]) -> UnreachableError:
    """The error for a login that keeps redirecting."""
    shown = " -> ".join(printable(urlsplit(h).path or "/", limit=60) for h in hops[-4:])
    return UnreachableError(
        f"the login was redirected {len(hops) - 1} times without opening a session"
        f" ({shown}): the server is misconfigured or in maintenance; try again later"
    )


def judge_download(head: Head, url: str) -> OmarBulkError | None:
    """The verdict on a download's status line and headers; None: go on to the body.

    A ``PermanentError`` here still leaves the body to be read: if it is an HTML page, the
    caller keeps it for diagnosis and quotes its title.
    """
    status = head.status
    if status in (401, 403):
        return AuthError(
            f"the server answered {head.said} to {printable(url)}: this certificate is not"
            " allowed to download; check its registration in OMAR-Online"
        )
    if 300 <= status < 400:
        where = printable(head.location or "elsewhere", limit=120)
        return SessionExpired(f"redirected to {where}: the login session expired")
    if status == 429 or status >= 500:
        return _slow_down(head, "")
    if status != 200:
        return PermanentError(head.said)
    encoding = head.encoding
    if encoding is not None and encoding not in DECODABLE:
        return RetryableError(
            f"the body came with Content-Encoding {printable(encoding, limit=40)!r}, which"
            " omar-bulk did not ask for and cannot check"
        )
    return None


def page_error(body: bytes, kept_at: object | None) -> OmarBulkError:
    """The error for an HTML page where data should be: a login page means the session
    expired (retry after logging in again); any other page fails the item."""
    if _LOGIN_MARKERS.search(body[:PAGE_SCAN]):
        return SessionExpired(f"login page {page_headline(body)!r}: the session expired")
    where = f" (kept at {kept_at})" if kept_at is not None else ""
    return PermanentError(
        f"the server sent an HTML page instead of data: {page_headline(body)!r}{where}"
    )


def is_login_page(body: bytes) -> bool:
    return bool(_LOGIN_MARKERS.search(body[:PAGE_SCAN]))


def looks_like_html(head: bytes, content_type: str | None) -> bool:
    """True for an HTML answer: a ``text/html`` type, or a body opening as an HTML page."""
    if content_type and "text/html" in content_type.lower():
        return True
    start = head[:64].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype", b"<html"))


def page_headline(body: bytes) -> str:
    """An HTML page's title, else its first line of text, safe to print."""
    match = _TITLE.search(body[:PAGE_SCAN])
    text = match.group(1) if match else b""
    if not text.strip():
        for line in _TAG.sub(b"\n", body[:PAGE_SCAN]).splitlines():
            if line.strip():
                text = line
                break
    headline = _SPACE.sub(" ", text.decode("utf-8", "replace")).strip()
    return printable(headline, limit=120) or "(empty page)"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


__all__ = [
    "DECODABLE",
    "MAX_LOGIN_REDIRECTS",
    "RETRY_AFTER_CAP",
    "Head",
    "is_login_page",
    "judge_download",
    "judge_login",
    "login_redirect",
    "looks_like_html",
    "page_error",
    "page_headline",
    "parse_retry_after",
    "redirect_loop",
]
