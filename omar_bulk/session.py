"""The one HTTPS session of a run: connection pool, cookie, login, and aiohttp's errors.

The session is opened when the first download needs it, not before: a rerun with nothing to
do sends nothing. Opening it requests the base URL once, following redirects only over https
and only on the server's own origin, so the session cookie never travels anywhere else. When
downloads find the session expired it is reopened once per expiry, however many workers
noticed.

When ``Settings.proxy`` names a forward proxy, every connection goes through it: a CONNECT
tunnel, inside which the TLS session with the client certificate runs end to end. aiohttp gets
the proxy per request, with the ``Proxy-Authorization`` header built here (its ``proxy_auth``
argument warns from 3.14 on, and a password inside the URL would reach its error messages).

aiohttp's, asyncio's and ssl's exceptions become omar-bulk's in exactly one place,
``classify_client_error``.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from yarl import URL

from .answers import (
    MAX_LOGIN_REDIRECTS,
    Head,
    judge_login,
    login_redirect,
    redirect_loop,
)
from .errors import (
    AuthError,
    ConnectionDropped,
    OmarBulkError,
    ProxyAuthError,
    ProxyError,
    RetryableError,
    TunnelCut,
    UnreachableError,
)
from .politeness import Backoff
from .proxy import (
    Proxy,
    auth_refused,
    no_tls_with,
    not_http,
    not_set_up,
    tunnel_cut,
    tunnel_refused,
    unreachable,
)
from .results import Observer
from .settings import Settings
from .text import printable
from .tls import CHAIN_FIX, no_common_version

#: Login pages are read whole up to this size; a body beyond it is not a login page.
LOGIN_BODY_LIMIT = 1 << 20
#: aiohttp's 64 KiB default pauses and resumes the socket constantly on a large body; the
#: buffer only fills that far when the disk falls behind.
READ_BUFFER = 1 << 20


def head_of(response: aiohttp.ClientResponse) -> Head:
    """The parts of a response that ``answers`` judges."""
    headers = response.headers
    return Head(
        status=response.status,
        reason=response.reason or "",
        content_type=headers.get("Content-Type"),
        content_encoding=headers.get("Content-Encoding"),
        content_length=response.content_length,
        chunked="chunked" in headers.get("Transfer-Encoding", "").lower(),
        location=headers.get("Location"),
        retry_after=headers.get("Retry-After"),
    )


class Session:
    """Owns the aiohttp client session and the login state of one run."""

    def __init__(
        self,
        settings: Settings,
        ssl_context: ssl.SSLContext,
        observer: Observer,
        backoff: Backoff,
    ) -> None:
        self.settings = settings
        self._ssl = ssl_context
        self._observer = observer
        self._backoff = backoff
        self._client: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        #: Bumped by every successful login; 0 until the first.
        self.generation = 0
        #: Downloads the current login has served.
        self.served = 0
        #: Logins in a row that were replaced without serving a single download.
        self.barren = 0
        #: Downloads any login of this run has served whole (``delivered``).
        self.served_ever = 0
        self.logins = 0
        #: aiohttp's per-request proxy arguments: empty for a direct connection.
        self._via = _proxy_arguments(settings.proxy)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Session]:
        settings = self.settings
        if settings.proxy is not None:
            self._observer.notice(f"connecting through the proxy {settings.proxy}")
        # No limit in aiohttp's pool: the engine's workers already bound the connections
        # (--concurrency of them, each with one request at a time, logins included), and a
        # wait for a slot there would count against ``connect`` below as if the network
        # were silent.
        connector = aiohttp.TCPConnector(
            ssl=self._ssl, limit=0, limit_per_host=0, enable_cleanup_closed=True
        )
        # ``connect`` bounds setting up a new connection as a whole: the name lookup (which
        # ``sock_connect`` leaves out), TCP, a proxy's answer to CONNECT (which aiohttp reads
        # with no other timeout: a silent proxy would hang the run) and the TLS handshake.
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.timeout,
            sock_connect=settings.timeout,
            sock_read=settings.timeout,
        )
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # keep cookies for IP-address hosts
            auto_decompress=False,
            read_bufsize=READ_BUFFER,
            headers={"Accept-Encoding": "identity", "User-Agent": _user_agent()},
        ) as client:
            self._client = client
            try:
                yield self
            finally:
                self._client = None

    async def ready(self) -> int:
        """The current login's generation, opening the session first if no login worked yet."""
        if self.generation:
            return self.generation
        async with self._lock:
            if not self.generation:
                await self._open()
        return self.generation

    async def renew(self, generation: int) -> None:
        """Log in again after ``generation`` expired, once however many workers ask."""
        async with self._lock:
            if generation != self.generation:
                return  # another worker already logged in again
            self.barren = self.barren + 1 if self.served == 0 else 0
            if self.barren >= 2:
                # Logging in again is cheap once. A login that expires again before serving
                # anything is a server in trouble: wait as for a 503 before the next one. The
                # wait is here, under the lock, so every worker waits for the same login.
                delay = self._backoff.delay(self.barren - 1)
                self._observer.notice(
                    f"the session expired again right after logging in; waiting {delay:.1f} s"
                    " before logging in again"
                )
                await asyncio.sleep(delay)
            await self._login()

    def served_one(self, generation: int) -> None:
        """A download under ``generation`` was answered with data: that login works. Told
        when the data starts, so that expiries met during a long body do not make the login
        look broken (``troubled``)."""
        if generation == self.generation:
            self.served += 1

    def delivered(self) -> None:
        """A download arrived whole: the session serves this run. A body cut short proves
        nothing of the kind (its headers may be all a failing server sends)."""
        self.served_ever += 1

    def ordinary_expiry(self) -> bool:
        """May an expiry met now be a session timing out, free of ``--retries``? Only once a
        login of this run has served a download whole: until then nothing says the session
        works, and every attempt counts (``--retries N``: at most N + 1 attempts at such a
        file)."""
        return self.served_ever > 0 and not self.troubled()

    def troubled(self) -> bool:
        """Logins keep expiring before serving anything: the last one was replaced without
        serving a download, and the current one has served none yet. Expiring again now is
        a server in trouble (a maintenance page that says "log in", a redirect on every
        request), not an ordinary session timeout."""
        return self.barren > 0 and self.served == 0

    @asynccontextmanager
    async def get(self, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``url`` exactly as built (already percent-encoded), no redirects followed."""
        assert self._client is not None
        try:
            async with self._client.get(
                URL(url, encoded=True), allow_redirects=False, **self._via
            ) as response:
                yield response
        except OmarBulkError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._classify(exc) from _cause(exc)

    def _classify(self, exc: BaseException) -> OmarBulkError:
        return classify_client_error(exc, self.settings.timeout, proxy=self.settings.proxy)

    async def _open(self) -> None:
        """The first login, retried like a download; every attempt dropped right after the
        handshake is how some servers refuse a client certificate."""
        last: OmarBulkError | None = None
        all_dropped = True
        for attempt in range(1, self.settings.retries + 2):
            try:
                await self._login()
                return
            except RetryableError as exc:
                last = exc
                # A tunnel cut before the server's TLS answered is the proxy's doing as
                # likely as the server's: no sign of a refused certificate.
                all_dropped = (
                    all_dropped
                    and isinstance(exc, ConnectionDropped)
                    and not isinstance(exc, TunnelCut)
                )
                if attempt > self.settings.retries:
                    break
                delay = self._backoff.delay(attempt, exc.retry_after)
                self._observer.notice(f"login failed ({exc}); retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
        where = printable(self.settings.base_url)
        if all_dropped:
            proxy = self.settings.proxy
            tunnel = f" (or how the proxy {proxy} ends tunnels it does not allow)" if proxy else ""
            raise AuthError(
                f"could not open a session at {where}: every attempt was closed without an"
                " answer right after the TLS handshake, which is how some servers refuse a"
                f" client certificate{tunnel}; check that --cert is the certificate registered"
                " for OMAR-Online"
            )
        if isinstance(last, TunnelCut) and self.settings.proxy is not None:
            raise UnreachableError(
                f"could not open a session at {where}: {tunnel_cut(self.settings.proxy)}"
            )
        raise UnreachableError(
            f"could not open a session at {where}: {last}; nothing was fetched,"
            " run the same command again later"
        )

    async def _login(self) -> None:
        """Request the base URL, following redirects by hand (``answers.login_redirect``
        says where they may go), until the server answers; judge that answer."""
        assert self._client is not None
        url = self.settings.base_url
        hops = [url]
        while True:
            try:
                async with self._client.get(
                    URL(url, encoded=True), allow_redirects=False, **self._via
                ) as response:
                    head = head_of(response)
                    body = b""
                    if not (300 <= head.status < 400):
                        body = await read_upto(response, LOGIN_BODY_LIMIT)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise self._classify(exc) from _cause(exc)
            if 300 <= head.status < 400 and head.location:
                url = login_redirect(url, head)
                hops.append(url)
                if len(hops) > MAX_LOGIN_REDIRECTS + 1 or url in hops[:-1]:
                    raise redirect_loop(hops)
                continue
            verdict = judge_login(head, body, self.settings.base_url)
            if verdict is not None:
                raise verdict
            self.generation += 1
            self.served = 0
            self.logins += 1
            return


async def read_upto(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body (``StreamReader.read(n)`` may return fewer)."""
    data = bytearray()
    while len(data) < limit:
        chunk = await response.content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def classify_client_error(
    exc: BaseException, timeout: float, *, proxy: Proxy | None = None
) -> OmarBulkError:
    """Translate an aiohttp, asyncio or ssl exception into the omar-bulk tree.

    TLS problems that another attempt cannot cure (the server's certificate does not verify,
    the server refuses ours with an alert) are fatal ``AuthError``s; everything else that can
    go wrong on the wire is worth retrying. Through a ``proxy``, its own refusals are fatal
    too (``proxy_error``); a tunnel it cuts is a dropped connection like any other.
    """
    if proxy is None:
        return _classify(exc, timeout)
    refused = proxy_error(exc, proxy)
    if refused is not None:
        return refused
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # ClientTimeout.connect: aiohttp does not say which part of the set-up was slow
        return RetryableError(not_set_up(proxy, timeout))
    verdict = _classify(exc, timeout)
    if isinstance(verdict, ConnectionDropped):
        # The proxy may have cut the tunnel as well as the server: say which way it went.
        if isinstance(exc, aiohttp.ClientConnectorError):
            # Still setting up: the TLS handshake inside the tunnel was not done, so this
            # is no server hanging up on our certificate after it.
            return TunnelCut(
                f"the connection was closed during the TLS handshake, through the proxy"
                f" {proxy.shown}"
            )
        return ConnectionDropped(f"{verdict}, through the proxy {proxy.shown}")
    return verdict


def _classify(exc: BaseException, timeout: float) -> OmarBulkError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return AuthError(_verify_message(exc.certificate_error))
    tls = _find_ssl_error(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return AuthError(_verify_message(tls))
    if tls is not None:
        reason = str(getattr(tls, "reason", None) or tls)
        if isinstance(tls, ssl.SSLEOFError) or "EOF" in reason.upper():
            # "EOF occurred in violation of protocol": the peer hung up mid-TLS, not a refusal
            return ConnectionDropped(f"the server closed the connection during TLS ({reason})")
        upper = reason.upper()
        protocol = no_common_version(reason)
        if protocol is not None:
            return AuthError(protocol)
        if "UNKNOWN_CA" in upper:
            # the server cannot chain our certificate to a root it trusts: the wrong
            # certificate, or the right one sent without its issuing CA
            return AuthError(
                f"the server does not know the issuer of our client certificate (TLS alert:"
                f" {reason}); check that --cert is the certificate registered for OMAR-Online"
                f" and that the file carries its full chain: {CHAIN_FIX}"
            )
        if "ALERT" in upper or "CERTIFICATE" in upper:
            return AuthError(
                f"the server refused our client certificate (TLS alert: {reason}); check that"
                " --cert is the certificate registered for OMAR-Online and is still valid"
            )
        if any(w in upper for w in ("VERSION", "PROTOCOL", "HANDSHAKE", "CIPHER")):
            return AuthError(f"TLS handshake failed: {reason}")
        return RetryableError(f"TLS error: {reason}")
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return RetryableError(f"timed out: nothing received for {timeout:g} s")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return RetryableError("body cut short: the connection broke during the transfer")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionDropped("the server closed the connection without an answer")
    if _was_reset(exc):
        return ConnectionDropped(f"the server reset the connection ({_said(exc)})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RetryableError(
            f"cannot connect to {exc.host}:{exc.port}: {printable(str(exc.strerror or exc))}"
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp's own complaints about what the server sent (a malformed status line or
        # header, a redirect it refused): say what it was, never just "0, message=''".
        return RetryableError(
            f"the server's answer could not be read: {printable(exc.message or '') or _said(exc)}"
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return RetryableError(f"connection error: {_said(exc)}")
    return RetryableError(f"{type(exc).__name__}: {printable(str(exc))}")


def proxy_error(exc: BaseException, proxy: Proxy) -> OmarBulkError | None:
    """What the proxy's own answer or silence means, or None when it is not about the proxy.

    407: our credentials are missing or wrong (``ProxyAuthError``, exit 3). The proxy not
    reached, or refusing the tunnel (403: many allow CONNECT to port 443 only, and OMAR-Online
    listens on 444): ``ProxyError``, exit 1, with the proxy's own status. A 5xx on CONNECT is
    the proxy failing to reach the server, which is retried like a direct connection that
    failed.
    """
    if isinstance(exc, aiohttp.ClientHttpProxyError):  # a ClientResponseError: before those
        said = f"{exc.status} {printable(exc.message or '')}".strip()
        target = _target(exc)
        if exc.status == 407:
            challenges = exc.headers.getall("Proxy-Authenticate", []) if exc.headers else []
            return ProxyAuthError(auth_refused(proxy, said, challenges))
        if 500 <= exc.status < 600:
            return RetryableError(f"the proxy {proxy.shown} could not reach {target}: {said}")
        location = exc.headers.get("Location") if exc.headers else None
        return ProxyError(tunnel_refused(proxy, target, said, exc.status, location))
    if _answers_connect(exc):
        # aiohttp could not read the proxy's answer to CONNECT as HTTP at all
        assert isinstance(exc, aiohttp.ClientResponseError)
        return ProxyError(not_http(proxy, printable(exc.message or "", limit=80) or _said(exc)))
    ours = isinstance(exc, aiohttp.ClientConnectorError) and (exc.host, exc.port) == (
        proxy.host,
        proxy.port,
    )
    if ours and isinstance(exc, aiohttp.ClientConnectorCertificateError):
        detail = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return AuthError(
            f"the certificate of the proxy {proxy} does not verify ({printable(str(detail))});"
            " if it comes from a private CA, give that CA's certificate with --ca-bundle"
        )
    if isinstance(exc, aiohttp.ClientProxyConnectionError) or ours:
        # aiohttp reports a proxy whose name does not resolve as a plain connector error.
        assert isinstance(exc, aiohttp.ClientConnectorError)
        reason = printable(str(exc.strerror or exc.os_error or exc)) or type(exc).__name__
        tls = exc.os_error if isinstance(exc.os_error, ssl.SSLError) else _find_ssl_error(exc)
        if proxy.scheme == "https" and tls is not None:
            said = printable(str(getattr(tls, "reason", None) or tls))
            return ProxyError(no_tls_with(proxy, said))
        return ProxyError(unreachable(proxy, reason))
    return None


def _cause(exc: BaseException) -> BaseException | None:
    """The exception to chain ours to: none for the proxy's answer, whose request carries the
    ``Proxy-Authorization`` header (aiohttp's ``repr`` of it shows the credentials)."""
    return None if _answers_connect(exc) else exc


def _answers_connect(exc: BaseException) -> bool:
    """Is ``exc`` about the proxy's answer to CONNECT (aiohttp's request for it is CONNECT)?"""
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return True
    info = getattr(exc, "request_info", None)
    return isinstance(exc, aiohttp.ClientResponseError) and getattr(info, "method", "") == "CONNECT"


def _target(exc: aiohttp.ClientResponseError) -> str:
    """``host:port`` the tunnel was asked for."""
    url = exc.request_info.url
    return f"{printable(url.host or '?')}:{url.port}"


def _proxy_arguments(proxy: Proxy | None) -> dict[str, Any]:
    """The arguments that send one aiohttp request through ``proxy`` (none: direct)."""
    if proxy is None:
        return {}
    via: dict[str, Any] = {"proxy": URL(proxy.url)}
    authorization = proxy.authorization()
    if authorization is not None:
        via["proxy_headers"] = {"Proxy-Authorization": authorization}
    return via


def _said(exc: BaseException) -> str:
    return printable(str(exc)) or type(exc).__name__


def _find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, ssl.SSLError):
            return current
        inner = getattr(current, "os_error", None)
        if isinstance(inner, ssl.SSLError):
            return inner
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _was_reset(exc: BaseException) -> bool:
    """A reset or broken pipe anywhere in the chain (aiohttp wraps them several ways)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, ConnectionResetError | BrokenPipeError):
            return True
        inner = getattr(current, "os_error", None)
        if isinstance(inner, ConnectionResetError | BrokenPipeError):
            return True
        if getattr(current, "errno", None) in (errno.ECONNRESET, errno.EPIPE):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _verify_message(error: BaseException) -> str:
    detail = getattr(error, "verify_message", None) or str(error)
    return (
        f"the server's certificate does not verify ({printable(str(detail))}); if the server"
        " uses a private CA, give its certificate with --ca-bundle"
    )


def _user_agent() -> str:
    from . import __version__

    return f"omar-bulk/{__version__}"


__all__ = [
    "LOGIN_BODY_LIMIT",
    "Session",
    "classify_client_error",
    "head_of",
    "proxy_error",
    "read_upto",
]
