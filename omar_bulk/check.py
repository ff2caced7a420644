"""``omar-bulk check``: look at the certificate and the server before a backfill, fetch nothing.

Each step is one ``Check``: a name, a verdict (``ok``, ``warn``, ``fail`` or ``skip``), a reason
a person can act on, and details for scripts. The steps run in the order a connection is made,
and the first failure decides the exit code, as ``fetch`` would have ended:

    certificate file ─▶ chain ─▶ validity ─▶ key ─▶ permissions (2: bad local input)
    TCP ─▶ [proxy] ─▶ TLS ─▶ server certificate                 (1: unreachable, 3: untrusted)
    our certificate accepted ─▶ session ─▶ clock                (3: refused)

Through a forward proxy (``proxy.proxy_for``), the TCP step connects to the proxy and says so,
and the proxy step asks it for a tunnel to the server (CONNECT, with our credentials): reached,
allowed, authenticated, each as ``fetch`` would judge it. TLS then runs inside the tunnel; for
an ``https://`` proxy inside the proxy's own TLS (``NestedTLS``).

Steps after a failure that they depend on are reported as skipped. The server steps use the
standard library's ``socket``, ``ssl`` and ``http.client`` directly, one step at a time, so each
can say exactly where a connection stops; they use the same SSL context as a run
(``tls.create_ssl_context``). The session cookie's name is reported, never its value.
"""

from __future__ import annotations

import email.utils
import http.client
import io
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .answers import MAX_LOGIN_REDIRECTS, Head, judge_login, login_redirect, redirect_loop
from .errors import AuthError, CertificateError, OmarBulkError, UsageError
from .protocol import normalise_base_url
from .proxy import (
    Proxy,
    auth_refused,
    connect_unanswered,
    no_tls_with,
    not_http,
    tunnel_cut,
    tunnel_refused,
    unreachable,
)
from .text import printable
from .tls import (
    CHAIN_FIX,
    EXPIRY_WARNING,
    ClientIdentity,
    PasswordSource,
    create_ssl_context,
    load_identity,
    no_common_version,
    readers,
)

OK = "ok"
WARN = "warn"
FAIL = "fail"
SKIP = "skip"

#: A clock further than this from the server's is worth a warning: certificate validity and
#: session lifetimes are judged on clocks.
CLOCK_SKEW_WARNING = 120.0

_BAD_INPUT = 2
_UNREACHABLE = 1
_REFUSED = 3


@dataclass(frozen=True, slots=True)
class Check:
    """One step's verdict. ``exit_code`` is what a failure of this step means for the run."""

    name: str
    verdict: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0

    def __post_init__(self) -> None:
        # Reasons quote the server (reason phrases, TLS alerts, certificate names): one
        # place makes them safe for a terminal, whichever step wrote them.
        object.__setattr__(self, "reason", printable(self.reason, limit=400))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "reason": self.reason,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Every step of one check, in order, and the exit code they add up to."""

    base_url: str
    checks: tuple[Check, ...]

    @property
    def exit_code(self) -> int:
        return next((c.exit_code for c in self.checks if c.verdict == FAIL), 0)

    @property
    def warnings(self) -> int:
        return sum(c.verdict == WARN for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "checks": [c.as_json() for c in self.checks],
        }


MARKS = {OK: "✓", WARN: "!", FAIL: "✗", SKIP: "-"}


def report_lines(report: CheckReport) -> list[str]:
    """The human view: one line per step, a mark, the step, the reason; then a verdict."""
    width = max(len(c.name) for c in report.checks)
    lines = [f"{MARKS[c.verdict]} {c.name:<{width}}  {c.reason}" for c in report.checks]
    if report.exit_code:
        lines.append(f"not ready: fix the first ✗ above (exit {report.exit_code})")
    elif report.warnings:
        lines.append(f"ready, with {report.warnings} warning(s)")
    else:
        lines.append("ready")
    return lines


def run_check(
    *,
    base_url: str,
    cert: Path | None,
    key: Path | None = None,
    ca_bundle: Path | None = None,
    password: PasswordSource | None = None,
    password_file: Path | None = None,
    timeout: float = 10.0,
    now: datetime | None = None,
    proxy: Proxy | None = None,
) -> CheckReport:
    """Check the client identity, then the server with it. Raises only ``UsageError`` for
    options that are wrong in themselves (a bad URL, a missing ``--cert``).

    ``password_file``: where ``password`` reads from (``OMAR_CERT_PASSWORD_FILE``), so that
    its permissions are checked as the certificate's are."""
    url = _valid_base_url(base_url)
    if cert is None:
        if key is not None:
            raise UsageError("--key needs --cert")
        raise UsageError("a client certificate is required: give --cert (or OMAR_CERT)")
    checks: list[Check] = []
    identity = _check_identity(checks, cert, key, password, now or datetime.now(UTC), password_file)
    context: ssl.SSLContext | None = None
    if identity is not None:
        try:
            context = create_ssl_context(identity, ca_bundle=ca_bundle)
        except (CertificateError, UsageError) as exc:
            checks.append(Check("TLS setup", FAIL, str(exc), exit_code=_BAD_INPUT))
    if context is None:
        for name in _server_steps(proxy):
            checks.append(Check(name, SKIP, "not tried: fix the problem above first"))
    else:
        _check_server(checks, url, context, timeout, proxy)
    return CheckReport(url, tuple(checks))


_SERVER_STEPS = ("TCP", "TLS", "server certificate", "our certificate", "session", "clock")


def _server_steps(proxy: Proxy | None) -> tuple[str, ...]:
    return _SERVER_STEPS if proxy is None else ("TCP", "proxy", *_SERVER_STEPS[1:])


def _valid_base_url(base_url: str) -> str:
    url = normalise_base_url(base_url.strip())
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise UsageError(f"base URL {base_url!r}: only https:// is accepted")
    if not parts.hostname:
        raise UsageError(f"base URL {base_url!r} has no host")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise UsageError(f"base URL {base_url!r} has a bad port") from None
    return url


# -- the client identity -------------------------------------------------------------------


def _check_identity(
    checks: list[Check],
    cert: Path,
    key: Path | None,
    password: PasswordSource | None,
    now: datetime,
    password_file: Path | None = None,
) -> ClientIdentity | None:
    try:
        identity = load_identity(cert, key, password=password)
    except CertificateError as exc:
        checks.append(Check("certificate", FAIL, str(exc), exit_code=_BAD_INPUT))
        return None
    leaf = identity.chain[0]
    details = {
        "file": str(cert),
        "subject": identity.subject,
        "common_name": _attribute(leaf.subject, "CN"),
        "organization": _attribute(leaf.subject, "O"),
        "issuer": leaf.issuer.rfc4514_string(),
        "serial": f"{leaf.serial_number:x}",
    }
    who = details["common_name"] or identity.subject
    org = f" ({details['organization']})" if details["organization"] else ""
    checks.append(
        Check(
            "certificate",
            OK,
            f"{who}{org}, issued by {_attribute(leaf.issuer, 'CN') or details['issuer']},"
            f" serial {details['serial']}",
            details,
        )
    )
    checks.append(_chain(identity))
    checks.append(_validity(identity, now))
    checks.append(
        Check(
            "private key",
            OK,
            "matches the certificate" + (f" (from {key})" if key else ""),
            {"file": str(key or cert)},
        )
    )
    for path in dict.fromkeys(p for p in (cert, key, password_file) if p is not None):
        checks.append(_permissions(path))
    failed = any(c.verdict == FAIL for c in checks)
    return None if failed else identity


def _attribute(name: Any, short: str) -> str | None:
    from cryptography.x509.oid import NameOID

    oid = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME}[short]
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def _chain(identity: ClientIdentity) -> Check:
    """The chain a run will send, leaf first; a warning when the leaf's issuer is missing."""
    lines = identity.chain_lines()
    details: dict[str, Any] = {"sent": [c.subject.rfc4514_string() for c in identity.chain]}
    shown = " <- ".join(
        _attribute(c.subject, "CN") or c.subject.rfc4514_string() for c in identity.chain
    )
    if identity.missing_issuer is not None:
        details["missing_issuer"] = identity.missing_issuer
        return Check("chain", WARN, f"{shown} <- {lines[-1]}: {CHAIN_FIX}", details)
    return Check("chain", OK, shown, details)


def _validity(identity: ClientIdentity, now: datetime) -> Check:
    details = {
        "not_before": identity.not_before.isoformat(),
        "not_after": identity.not_after.isoformat(),
        "days_left": (identity.not_after - now).days,
    }
    span = f"valid {identity.not_before:%Y-%m-%d} to {identity.not_after:%Y-%m-%d}"
    try:
        warnings = identity.validity_warnings(now)  # the rule fetch applies, not a copy of it
    except CertificateError as exc:
        return Check("validity", FAIL, str(exc), details, exit_code=_BAD_INPUT)
    if warnings:
        return Check(
            "validity",
            WARN,
            f"{warnings[0]}: ask for a renewal now, it takes time",
            details,
        )
    days = details["days_left"]
    return Check(
        "validity",
        OK,
        f"{span}: {days} days left (warning from {EXPIRY_WARNING.days} days)",
        details,
    )


def _permissions(path: Path) -> Check:
    try:
        mode, others = readers(path)
    except OSError as exc:
        return Check("permissions", WARN, f"{path}: cannot stat ({exc.strerror})")
    details = {"file": str(path), "mode": f"{mode:04o}"}
    if others is not None:
        return Check(
            "permissions",
            WARN,
            f"{path} is {mode:04o}: {others} can read it; chmod 600 {path}",
            details,
        )
    return Check("permissions", OK, f"{path} is {mode:04o}: only you can read it", details)


# -- the server ----------------------------------------------------------------------------


def _check_server(
    checks: list[Check],
    url: str,
    context: ssl.SSLContext,
    timeout: float,
    proxy: Proxy | None = None,
) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    where = f"{host}:{port}"
    remaining = list(_server_steps(proxy))

    def add(check: Check) -> None:
        remaining.remove(check.name)
        checks.append(check)

    def skip_rest(why: str = "not tried: the step above failed") -> None:
        for name in list(remaining):
            add(Check(name, SKIP, why))

    started = time.monotonic()
    if proxy is not None:
        tunnel = _tunnel(add, proxy, context, where, timeout)
        if tunnel is None:
            skip_rest()
            return
        raw = tunnel
    else:
        try:
            raw = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            add(
                Check(
                    "TCP", FAIL, f"cannot connect to {where}: {_os_reason(exc)}", {}, _UNREACHABLE
                )
            )
            skip_rest()
            return
        add(Check("TCP", OK, f"connected to {where} in {_ms(started)}", {"address": where}))
    try:
        try:
            if isinstance(raw, ssl.SSLSocket):  # an https:// proxy: TLS inside its TLS
                tls: Any = NestedTLS(raw, context, host)
            else:
                tls = context.wrap_socket(raw, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            add(Check("TLS", OK, "the server answered the TLS handshake"))
            add(
                Check(
                    "server certificate",
                    FAIL,
                    f"does not verify for {host} ({exc.verify_message}); if the server uses a"
                    " private CA, give its certificate with --ca-bundle",
                    {"verify_message": exc.verify_message},
                    _REFUSED,
                )
            )
            skip_rest()
            return
        except ssl.SSLError as exc:
            # TLS 1.2 refuses a client certificate inside the handshake, with an alert ...
            reason = str(exc.reason or exc)
            protocol = no_common_version(reason)  # fetch's rule: an alert, not a refusal
            if protocol is not None:
                add(Check("TLS", FAIL, protocol, {}, _REFUSED))
            elif _is_refusal(reason):
                add(Check("TLS", OK, "the server answered the TLS handshake"))
                add(Check("server certificate", SKIP, "not reported: the handshake ended early"))
                add(_refused(f"TLS alert: {reason}"))
            elif isinstance(exc, ssl.SSLEOFError):
                add(_dropped_in_handshake(proxy))
            else:
                add(Check("TLS", FAIL, f"TLS handshake with {where} failed: {reason}", {}, 3))
            skip_rest()
            return
        except (ConnectionResetError, BrokenPipeError):
            add(_dropped_in_handshake(proxy))  # ... or by hanging up
            skip_rest()
            return
        except OSError as exc:
            add(
                Check(
                    "TLS",
                    FAIL,
                    f"no TLS handshake with {where}: {_os_reason(exc)}",
                    {},
                    _UNREACHABLE,
                )
            )
            skip_rest()
            return
        with tls:
            cipher = tls.cipher()
            suite = cipher[0] if cipher else "unknown cipher"
            add(
                Check(
                    "TLS",
                    OK,
                    f"{tls.version()}, {suite}",
                    {"version": tls.version(), "cipher": suite},
                )
            )
            add(_server_certificate(tls, host))
            _check_login(add, skip_rest, tls, url, context, timeout, proxy)
    finally:
        raw.close()


class NestedTLS:
    """The server's TLS inside the TLS of an ``https://`` proxy's tunnel.

    An ``SSLSocket`` cannot be wrapped in another one (OpenSSL would write to the file
    descriptor, under the outer TLS), so the inner session is an ``SSLObject`` over memory
    buffers, pumped through the outer socket. It offers what the steps and ``http.client`` use
    of a socket: ``sendall``, ``recv``, ``makefile``, ``close`` and the TLS facts.
    """

    def __init__(self, outer: ssl.SSLSocket, context: ssl.SSLContext, server_hostname: str):
        self._outer = outer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._pump(self._tls.do_handshake)

    def _pump(self, step: Callable[..., Any], *args: Any) -> Any:
        """Run one SSLObject call, feeding it from the outer socket until it is satisfied."""
        while True:
            try:
                result = step(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self._outer.recv(1 << 16)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._outer.sendall(pending)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._pump(self._tls.write, view) :]

    def recv(self, size: int) -> bytes:
        try:
            return bytes(self._pump(self._tls.read, size))
        except ssl.SSLZeroReturnError:  # the server closed the TLS session cleanly
            return b""

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self))

    def cipher(self) -> tuple[str, str, int] | None:
        return self._tls.cipher()

    def version(self) -> str | None:
        return self._tls.version()

    def getpeercert(self) -> Any:
        return self._tls.getpeercert()

    def close(self) -> None:
        self._outer.close()

    def __enter__(self) -> NestedTLS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Reader(io.RawIOBase):
    """``NestedTLS`` as a raw stream, for ``http.client``'s buffered reads."""

    def __init__(self, tls: NestedTLS) -> None:
        self._tls = tls

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._tls.recv(len(buffer))
        buffer[: len(data)] = data
        return len(data)


#: The most of a proxy's answer to CONNECT that is read (its status line and headers).
_PROXY_HEAD_LIMIT = 64 * 1024


def _ask_for_tunnel(sock: socket.socket, proxy: Proxy, where: str) -> bytes:
    """Send CONNECT for ``where`` (with our credentials); the proxy's answer, head only."""
    lines = [f"CONNECT {where} HTTP/1.1", f"Host: {where}"]
    authorization = proxy.authorization()
    if authorization is not None:
        lines.append(f"Proxy-Authorization: {authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head and len(head) < _PROXY_HEAD_LIMIT:
        # The proxy sends nothing after its head until the server's TLS starts, so reading
        # more than one byte at a time cannot take any of the server's bytes.
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


def _proxy_status(head: bytes) -> tuple[int, str]:
    """The status of a proxy's answer (0 when it is not HTTP) and its text for messages:
    the status and reason, or the whole first line of what is not HTTP."""
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    fields = first.split(" ", 2)
    if fields[0].startswith("HTTP/") and len(fields) > 1 and fields[1].isdigit():
        return int(fields[1]), " ".join(fields[1:]).strip()
    return 0, printable(first, limit=80) or "no answer"


def _headers(head: bytes, name: str) -> list[str]:
    """The values of the header ``name`` (lower case) in a proxy's answer."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [line.split(":", 1)[1] for line in lines if line.lower().startswith(f"{name}:")]


def _header(head: bytes, name: str) -> str | None:
    values = _headers(head, name)
    return values[0].strip() if values else None


class _NestedConnection(http.client.HTTPSConnection):
    """A new connection to the server through an ``https://`` proxy (``http.client``'s own
    tunnels speak to the proxy in clear)."""

    def __init__(
        self, host: str, port: int, proxy: Proxy, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._proxy = proxy
        self._tls_context = context

    def connect(self) -> None:
        proxy, where = self._proxy, f"{self.host}:{self.port}"
        raw = socket.create_connection((proxy.host, proxy.port), timeout=self.timeout)
        outer = self._tls_context.wrap_socket(raw, server_hostname=proxy.host)
        status, said = _proxy_status(_ask_for_tunnel(outer, proxy, where))
        if status != 200:
            outer.close()
            raise OSError(f"the proxy answered {said}")
        self.sock = NestedTLS(outer, self._tls_context, self.host)


def _tunnel(
    add: Callable[[Check], None],
    proxy: Proxy,
    context: ssl.SSLContext,
    where: str,
    timeout: float,
) -> socket.socket | None:
    """The TCP and proxy steps: connect to the proxy (TLS first for an https:// one), ask it
    for a tunnel to ``where``; the socket to run the server's TLS in, or None after a failure."""
    started = time.monotonic()
    address = f"{proxy.host}:{proxy.port}"
    try:
        raw = socket.create_connection((proxy.host, proxy.port), timeout=timeout)
    except OSError as exc:
        add(Check("TCP", FAIL, unreachable(proxy, _os_reason(exc)), {}, _UNREACHABLE))
        return None
    add(
        Check(
            "TCP",
            OK,
            f"connected to the proxy {proxy.shown} in {_ms(started)}; the server {where} is"
            " reached through it",
            {"address": address, "proxy": proxy.shown, "proxy_source": proxy.source},
        )
    )
    sock: socket.socket = raw
    try:
        if proxy.scheme == "https":
            try:
                sock = context.wrap_socket(raw, server_hostname=proxy.host)
            except ssl.SSLCertVerificationError as exc:
                add(
                    Check(
                        "proxy",
                        FAIL,
                        f"the certificate of the proxy {proxy} does not verify"
                        f" ({exc.verify_message}); if it comes from a private CA, give that"
                        " CA's certificate with --ca-bundle",
                        {},
                        _REFUSED,
                    )
                )
                raw.close()
                return None
            except (ssl.SSLError, TimeoutError) as exc:
                # a plain HTTP proxy answers our TLS hello with an HTTP error, or not at all
                reason = _os_reason(exc) if isinstance(exc, TimeoutError) else str(exc.reason)
                add(Check("proxy", FAIL, no_tls_with(proxy, reason), {}, _UNREACHABLE))
                raw.close()
                return None
        head = _ask_for_tunnel(sock, proxy, where)
    except TimeoutError:
        add(Check("proxy", FAIL, connect_unanswered(proxy, where, timeout), {}, _UNREACHABLE))
        sock.close()
        return None
    except OSError as exc:
        add(Check("proxy", FAIL, unreachable(proxy, _os_reason(exc)), {}, _UNREACHABLE))
        sock.close()
        return None
    status, said = _proxy_status(head)
    details: dict[str, Any] = {"status": status, "proxy": proxy.shown}
    if status == 200:
        who = (
            f"authenticated as {proxy.username} (credentials from {proxy.credentials_from})"
            if proxy.username is not None
            else "no authentication asked"
        )
        add(Check("proxy", OK, f"CONNECT {where} allowed ({said}); {who}", details))
        return sock
    sock.close()
    if status == 407:
        challenges = _headers(head, "proxy-authenticate")
        add(Check("proxy", FAIL, auth_refused(proxy, said, challenges), details, _REFUSED))
    elif status == 0 and not head:
        reason = unreachable(proxy, "it closed the connection without answering CONNECT")
        add(Check("proxy", FAIL, reason, details, _UNREACHABLE))
    elif status == 0:
        add(Check("proxy", FAIL, not_http(proxy, repr(said)), details, _UNREACHABLE))
    else:
        location = _header(head, "location")
        refused = tunnel_refused(proxy, where, said, status, location)
        add(Check("proxy", FAIL, refused, details, _UNREACHABLE))
    return None


def _server_certificate(tls: ssl.SSLSocket, host: str) -> Check:
    peer: dict[str, Any] = dict(tls.getpeercert() or {})
    short = {"commonName": "CN", "organizationName": "O"}
    subject = ", ".join(
        f"{short[k]}={v}" for rdn in peer.get("subject", ()) for k, v in rdn if k in short
    )
    names = [f"{kind}:{value}" for kind, value in peer.get("subjectAltName", ())]
    details = {
        "subject": subject,
        "subject_alt_names": names,
        "issuer": ", ".join(f"{k}={v}" for rdn in peer.get("issuer", ()) for k, v in rdn),
        "not_after": peer.get("notAfter"),
    }
    shown = ", ".join(names) or subject or "?"
    return Check(
        "server certificate", OK, f"verifies for {host}: {subject or '?'}; names {shown}", details
    )


def _check_login(
    add: Callable[[Check], None],
    skip_rest: Callable[[], None],
    tls: ssl.SSLSocket,
    url: str,
    context: ssl.SSLContext,
    timeout: float,
    proxy: Proxy | None = None,
) -> None:
    """The login request a run starts with; its answer says whether our certificate is welcome."""
    from . import __version__

    parts = urlsplit(url)
    headers = {"User-Agent": f"omar-bulk/{__version__} (check)", "Accept-Encoding": "identity"}
    cookies: dict[str, str] = {}
    server_date: str | None = None
    current = url
    hops = [url]
    head = Head(0)
    body = b""
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port or 443, context=context, timeout=timeout
    )
    connection.sock = tls  # the socket the steps above opened and checked
    try:
        while True:
            target = urlsplit(current)
            path = target.path + (f"?{target.query}" if target.query else "")
            if cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
            try:
                connection.request("GET", path or "/", headers=headers)
                response = connection.getresponse()
                body = response.read(1 << 20)
            except ssl.SSLError as exc:
                reason = str(exc.reason or exc)
                if _is_refusal(reason):
                    add(_refused(f"TLS alert: {reason}"))
                else:
                    add(Check("our certificate", FAIL, f"TLS error: {reason}", {}, _REFUSED))
                skip_rest()
                return
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                add(
                    _refused(
                        "the server closed the connection right after the handshake without"
                        " answering, which is how some servers refuse a client certificate"
                    )
                )
                skip_rest()
                return
            except (TimeoutError, OSError) as exc:
                add(
                    Check(
                        "our certificate",
                        FAIL,
                        f"no answer to the login request: {_os_reason(exc)}",
                        {},
                        _UNREACHABLE,
                    )
                )
                skip_rest()
                return
            server_date = response.getheader("Date") or server_date
            for header in response.headers.get_all("Set-Cookie") or ():
                name, _, rest = header.partition("=")
                cookies[name.strip()] = rest.split(";", 1)[0]
            status = response.status
            head = Head(
                status=status,
                reason=response.reason or "",
                content_type=response.getheader("Content-Type"),
                location=response.getheader("Location"),
                retry_after=response.getheader("Retry-After"),
            )
            if 300 <= status < 400 and head.location:
                # The run's own rule (answers.login_redirect): https, the same origin, no loop.
                try:
                    current = login_redirect(current, head)
                    hops.append(current)
                    if len(hops) > MAX_LOGIN_REDIRECTS + 1 or current in hops[:-1]:
                        raise redirect_loop(hops)
                except OmarBulkError as exc:
                    add(_login_failed(exc, {"status": status}))
                    skip_rest()
                    return
                if response.will_close:
                    connection.close()
                    connection = _connection(parts, context, timeout, proxy)
                continue
            break
    finally:
        connection.close()
    detail = {"status": status}
    verdict = judge_login(head, body, url)
    if verdict is not None:
        add(_login_failed(verdict, detail))
        skip_rest()
        return
    add(Check("our certificate", OK, f"accepted: the login answered {head.said}", detail))
    names = sorted(cookies)
    if names:
        add(Check("session", OK, f"opened: cookie {', '.join(names)}", {"cookies": names}))
    else:
        add(
            Check(
                "session",
                WARN,
                "the login set no cookie: downloads may each need a login",
                {"cookies": []},
            )
        )
    add(_clock(server_date))


def _connection(
    parts: Any, context: ssl.SSLContext, timeout: float, proxy: Proxy | None
) -> http.client.HTTPSConnection:
    """A new connection to the server, through the proxy's tunnel when there is one."""
    host, port = parts.hostname or "", parts.port or 443
    if proxy is None:
        return http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    if proxy.scheme == "https":
        return _NestedConnection(host, port, proxy, context, timeout)
    connection = http.client.HTTPSConnection(
        proxy.host, proxy.port, context=context, timeout=timeout
    )
    authorization = proxy.authorization()
    headers = {"Proxy-Authorization": authorization} if authorization else None
    connection.set_tunnel(host, port, headers=headers)
    return connection


def _login_failed(error: OmarBulkError, detail: dict[str, Any]) -> Check:
    """The verdict of the run's own login rules (``answers``), as a failed check."""
    code = _REFUSED if isinstance(error, AuthError) else _UNREACHABLE
    return Check("our certificate", FAIL, str(error), detail, code)


def _clock(server_date: str | None) -> Check:
    if not server_date:
        return Check("clock", SKIP, "the server sent no Date header to compare with")
    try:
        theirs = email.utils.parsedate_to_datetime(server_date)
    except (TypeError, ValueError):
        return Check("clock", SKIP, f"the server's Date header is unreadable: {server_date!r}")
    if theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=UTC)
    skew = datetime.now(UTC).timestamp() - theirs.timestamp()
    details = {"skew_seconds": round(skew, 1), "server_date": server_date}
    # The Date header has one-second resolution and was stamped before the answer travelled.
    if abs(skew) <= CLOCK_SKEW_WARNING:
        return Check("clock", OK, f"within {max(1, round(abs(skew)))} s of the server's", details)
    direction = "ahead of" if skew > 0 else "behind"
    return Check(
        "clock",
        WARN,
        f"this machine is {_span(abs(skew))} {direction} the server: set its clock (NTP)",
        details,
    )


def _refused(why: str) -> Check:
    return Check(
        "our certificate",
        FAIL,
        f"refused by the server ({why}); check that --cert is the certificate registered for"
        " OMAR-Online and is still valid",
        {},
        _REFUSED,
    )


def _dropped_in_handshake(proxy: Proxy | None) -> Check:
    if proxy is not None:
        # The proxy may have cut the tunnel as well as the server: as in ``fetch``, no sign
        # of a refused certificate (``session.classify_client_error``).
        return Check("TLS", FAIL, tunnel_cut(proxy), {}, _UNREACHABLE)
    return Check(
        "TLS",
        FAIL,
        "the server closed the connection during the TLS handshake, which is how some servers"
        " refuse a client certificate; check that --cert is the certificate registered for"
        " OMAR-Online",
        {},
        _REFUSED,
    )


def _is_refusal(reason: str) -> bool:
    upper = reason.upper()
    return "ALERT" in upper or "CERTIFICATE" in upper


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    strerror = getattr(exc, "strerror", None)
    return str(strerror or exc or type(exc).__name__)


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = [
    "FAIL",
    "MARKS",
    "OK",
    "SKIP",
    "WARN",
    "Check",
    "CheckReport",
    "report_lines",
    "run_check",
]
