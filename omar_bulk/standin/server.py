"""The stand-in OMAR-Online server: aiohttp behind mutual TLS, strict about every parameter.

The expected parameters are written out here on their own, from the specification, rather than
imported from ``omar_bulk.protocol``: the server is the check on the client, not its echo.
Validation runs on the raw query string exactly as received, so a client that sends ``/`` where
the specification says ``%2F`` gets a 400.

Faults are injected per request. ``Faults.script`` maps an id to the faults its successive
requests meet (``"503"``, then ``"cut"``...; a trailing ``*`` repeats one forever), and
``Faults.rate`` adds seeded random faults for demos. Fault names:

    503 429 500   an error status (503 and 429 carry Retry-After)
    cut           headers promise the whole body, half is sent, the connection drops
    stall         half the body is sent, then silence for ``stall_seconds``
    short         Content-Length larger than the body actually sent, then the connection closes
    long          Content-Length 100 bytes smaller than the body, and the whole body sent
    login         a 200 HTML login page, as when the session is unknown
    expire        the session is dropped, then the login page
    redirect      a 302 to the login page
    empty         200 with an empty body (no data for the range)
    html          a 200 HTML error page that is not a login page
    404 403 401 400   that status with an HTML page
    gzip          the body gzip-compressed, with Content-Encoding: gzip (not asked for)
    gzipcut       a gzip body missing its end, Content-Length matching what is sent
    brotli        Content-Encoding: br (a coding the client cannot check)
    unframed      the whole body with neither Content-Length nor chunked, then a close
    unframedcut   half the body with neither framing, then a close
    escape        a 503 whose reason phrase carries terminal escape sequences

``Faults.login`` scripts the answers to the session-opening request the same way:
``"http"`` redirects it to plain http, ``"elsewhere"`` to another origin, ``"loop"`` to itself.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import re
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from .bodies import csv_body, mdef_body
from .certs import TestPKI

FAULT_NAMES = (
    "503", "429", "500", "cut", "stall", "short", "long", "login", "expire", "redirect",
    "empty", "html", "404", "403", "401", "400", "gzip", "gzipcut", "brotli", "unframed",
    "unframedcut", "escape",
)  # fmt: skip
LOGIN_FAULTS = ("http", "elsewhere", "loop")
#: A reason phrase that would clear the screen and retitle the terminal if printed raw.
ESCAPE_REASON = "Unavailable \x1b[2J\x1b]0;owned\x07 \u202egnp.exe"

# From the specification, section 3.1, in its order.
SPEC_ORDER = (
    "requestedFormat",
    "datasourceType",
    "groupOrMeter",
    "selectedMeters",
    "startDate",
    "endDate",
    "timeType",
    "fileFormat",
    "group",
)
SPEC_PROGRAMS = {"/getMDEF.jsp": "MDEF", "/getSQMDCsvForDownload.jsp": "CSV"}
_WIRE_DATE = re.compile(r"^(\d\d)%2[Ff](\d\d)%2[Ff](\d\d\d\d)$")
SESSION_COOKIE = "JSESSIONID"


@dataclass
class Faults:
    """What the stand-in does besides answering correctly. Mutable: tests adjust it live."""

    latency: float = 0.0
    retry_after: float = 1.0
    stall_seconds: float = 60.0
    script: dict[str, list[str]] = field(default_factory=dict)
    rate: float = 0.0
    kinds: tuple[str, ...] = ("503", "500", "cut")
    seed: int = 0
    session_requests: int = 0
    #: How an unknown or expired session is answered: a 200 login page, or a 302 to it.
    expired_redirect: bool = False
    revision: int = 0
    #: Bytes of filler appended to every body (to make big files), and seconds between
    #: 64 KiB pieces of a body (to make slow ones).
    padding: int = 0
    trickle: float = 0.0
    #: The next this-many download requests, whatever they are, get a 503 (a push-back storm).
    storm: int = 0
    #: Also accept dates with plain ``/`` (off: the specification says ``%2F``). Only for
    #: benchmarking tools that cannot send ``%2F``, such as parfive.
    accept_slashes: bool = False
    #: Faults for the successive session-opening requests (``LOGIN_FAULTS``; ``*`` repeats).
    login: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    line: str
    path: str
    raw_query: str
    session: str | None
    status: int
    fault: str | None
    at: float = 0.0
    active: int = 0


class StandIn:
    """The server's state: sessions, fault script and the log of requests seen."""

    def __init__(self, pki: TestPKI, faults: Faults | None = None) -> None:
        self.pki = pki
        self.faults = faults or Faults()
        self.log: list[Seen] = []
        self.sessions: dict[str, int] = {}
        self.logins = 0
        self.active = 0
        self.max_active = 0
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._cuts = 0
        self.base_url = ""

    # -- the application ------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._login)
        for path in SPEC_PROGRAMS:
            app.router.add_get(path, self._download)
        return app

    def ssl_context(self, *, max_tls: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.pki.server))
        context.load_verify_locations(cafile=str(self.pki.ca))
        context.verify_mode = ssl.CERT_REQUIRED
        if max_tls is not None:
            context.maximum_version = max_tls
        return context

    def downloads(self) -> list[Seen]:
        """Download requests seen so far (not logins)."""
        return [s for s in self.log if s.path in SPEC_PROGRAMS]

    async def _login(self, request: web.Request) -> web.Response:
        fault = None
        with self._lock:
            if self.faults.login:
                head = self.faults.login[0]
                fault = head[:-1] if head.endswith("*") else self.faults.login.pop(0)
        if fault is not None:
            self._record(request, 302, fault)
            host = request.host
            where = {
                "http": f"http://{host}/",
                "elsewhere": "https://omar-elsewhere.invalid/",
                "loop": "/",
            }[fault]
            raise web.HTTPFound(where)
        token = secrets.token_hex(16)
        with self._lock:
            self.sessions[token] = 0
            self.logins += 1
        self._record(request, 200, None)
        response = _page("OMAR-Online", "Welcome to the omar-bulk stand-in of OMAR-Online.")
        response.set_cookie(SESSION_COOKIE, token, path="/", secure=True, httponly=True)
        return response

    async def _download(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return await self._answer(request)
        finally:
            with self._lock:
                self.active -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        raw_query = request.raw_path.partition("?")[2]
        if self.faults.accept_slashes:
            raw_query = re.sub(r"(startDate|endDate)=(\d\d)/(\d\d)/", r"\1=\2%2F\3%2F", raw_query)
        params, problem = _validate(request.path, raw_query)
        if problem:
            self._record(request, 400, None)
            return _page("Bad request", problem, status=400)
        ident = params["selectedMeters"]
        fault = self._next_fault(ident)
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        session = request.cookies.get(SESSION_COOKIE)
        with self._lock:
            known = session in self.sessions
            if known and fault == "expire":
                del self.sessions[session]  # type: ignore[arg-type]
                known = False
            if known:
                self.sessions[session] += 1  # type: ignore[index]
                limit = self.faults.session_requests
                if limit and self.sessions[session] > limit:  # type: ignore[index]
                    del self.sessions[session]  # type: ignore[arg-type]
                    known = False
        if not known and self.faults.expired_redirect:
            self._record(request, 302, fault or "no session")
            raise web.HTTPFound("/")
        if not known or fault in ("login", "expire"):
            self._record(request, 200, fault or "no session")
            return _login_page()
        if fault == "redirect":
            self._record(request, 302, fault)
            raise web.HTTPFound("/")
        if fault in ("503", "429", "500", "404", "403", "401", "400"):
            status = int(fault)
            self._record(request, status, fault)
            headers = (
                {"Retry-After": f"{self.faults.retry_after:g}"} if status in (503, 429) else {}
            )
            return _page(f"Error {status}", "The stand-in was told to fail.", status, headers)
        if fault == "html":
            self._record(request, 200, fault)
            return _page("OMAR-Online Error", "Unable to process the request at this time.")
        body = b"" if fault == "empty" else self._body(request.path, params)
        self._record(request, 200, fault)
        if fault in ("cut", "stall", "short", "long"):
            return await self._broken(request, body, fault)
        if fault in ("gzip", "gzipcut", "brotli"):
            packed = gzip.compress(body)
            if fault == "gzipcut":
                packed = packed[: len(packed) // 2]
            coding = "br" if fault == "brotli" else "gzip"
            return web.Response(
                body=packed if fault != "brotli" else body,
                content_type="application/octet-stream",
                headers={"Content-Encoding": coding},
            )
        if fault in ("unframed", "unframedcut", "escape"):
            return await self._raw(request, body, fault)
        content_type = (
            "text/csv" if SPEC_PROGRAMS[request.path] == "CSV" else ("application/octet-stream")
        )
        if self.faults.trickle and body:
            return await self._trickle(request, body, content_type)
        return web.Response(body=body, content_type=content_type)

    async def _trickle(
        self, request: web.Request, body: bytes, content_type: str
    ) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(body)
        response.content_type = content_type
        await response.prepare(request)
        try:
            for offset in range(0, len(body), 65536):
                await response.write(body[offset : offset + 65536])
                await asyncio.sleep(self.faults.trickle)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-body (interrupted, timed out): nothing to do
        return response

    async def _broken(self, request: web.Request, body: bytes, fault: str) -> web.StreamResponse:
        transport = request.transport
        if fault == "long" and transport is not None:
            # Raw bytes: aiohttp's own writer would not send more than it announced.
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {max(len(body) - 100, 0)}\r\n\r\n"
            ).encode()
            transport.write(head + body)
            await asyncio.sleep(0.05)
            transport.close()
            return web.Response(status=200)  # never sent: the transport is closed
        response = web.StreamResponse()
        response.content_length = len(body) + (1000 if fault == "short" else 0)
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        await response.write(body[: len(body) // 2] if fault != "short" else body)
        if fault == "stall":
            await asyncio.sleep(self.faults.stall_seconds)
        if request.transport is not None:
            request.transport.close()
        return response

    async def _raw(self, request: web.Request, body: bytes, fault: str) -> web.StreamResponse:
        """Answers aiohttp's own writer will not produce, written to the socket as bytes."""
        transport = request.transport
        assert transport is not None
        if fault == "escape":
            reason = ESCAPE_REASON
            page = b"<html><body>busy</body></html>"
            head = (
                f"HTTP/1.1 503 {reason}\r\nContent-Type: text/html\r\nRetry-After: 0\r\n"
                f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n"
            )
            transport.write(head.encode("utf-8") + page)
        else:
            # A cut lands somewhere else each time, as a real one does.
            with self._lock:
                self._cuts += 1
                share = 2 + self._cuts % 5
            sent = body if fault == "unframed" else body[: len(body) // share]
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            transport.write(head.encode() + b"Connection: close\r\n\r\n" + sent)
        await asyncio.sleep(0.02)
        if fault == "unframedcut":
            transport.abort()  # no TLS close_notify: how a dropped connection looks
        else:
            transport.close()
        return web.Response(status=200)  # never sent: the transport is closed

    def _body(self, path: str, params: dict[str, str]) -> bytes:
        return body_for(
            SPEC_PROGRAMS[path].lower(),
            params["groupOrMeter"],
            params["selectedMeters"],
            _parse_wire_date(params["startDate"]),
            _parse_wire_date(params["endDate"]),
            params["timeType"],
            self.faults,
        )

    def _next_fault(self, ident: str) -> str | None:
        with self._lock:
            if self.faults.storm > 0:
                self.faults.storm -= 1
                return "503"
            queue = self.faults.script.get(ident)
            if queue:
                head = queue[0]
                if head.endswith("*"):
                    return head[:-1]
                return queue.pop(0)
            if self.faults.rate and self._rng.random() < self.faults.rate:
                return self._rng.choice(self.faults.kinds)
        return None

    def _record(self, request: web.Request, status: int, fault: str | None) -> None:
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        seen = Seen(
            line=f"{request.method} {request.raw_path} {version}",
            path=request.path,
            raw_query=request.raw_path.partition("?")[2],
            session=request.cookies.get(SESSION_COOKIE),
            status=status,
            fault=fault,
            at=time.monotonic(),
            active=self.active,
        )
        with self._lock:
            self.log.append(seen)


def body_for(
    fmt: str,
    kind: str,
    ident: str,
    start: date,
    end: date,
    time_type: str,
    faults: Faults | None = None,
) -> bytes:
    """The exact bytes the stand-in answers a good request with (tests compare against it)."""
    faults = faults or Faults()
    make = mdef_body if fmt == "mdef" else csv_body
    body = make(kind, ident, start, end, time_type, faults.revision)
    if faults.padding:
        body += b"#" * faults.padding
    return body


def _validate(path: str, raw_query: str) -> tuple[dict[str, str], str | None]:
    """Check a raw query against the specification; return its decoded values or a reason."""
    pairs = [part.partition("=") for part in raw_query.split("&")] if raw_query else []
    names = tuple(name for name, _, _ in pairs)
    if names != SPEC_ORDER:
        return {}, f"parameters must be exactly {'&'.join(SPEC_ORDER)} in that order; got {names}"
    if any(not sep for _, sep, _ in pairs):
        return {}, "every parameter needs '='"
    raw = {name: value for name, _, value in pairs}
    if raw["requestedFormat"] != "download":
        return {}, "requestedFormat must be 'download'"
    if raw["datasourceType"] != "SQMD":
        return {}, "datasourceType must be 'SQMD'"
    if raw["groupOrMeter"] not in ("group", "meter"):
        return {}, "groupOrMeter must be 'group' or 'meter'"
    for name in ("startDate", "endDate"):
        if not _WIRE_DATE.match(raw[name]):
            return {}, f"{name} must be MM%2FDD%2FYYYY, got {raw[name]!r}"
        try:
            _parse_wire_date(raw[name])
        except ValueError:
            return {}, f"{name} is not a calendar date: {raw[name]!r}"
    if _parse_wire_date(raw["startDate"]) > _parse_wire_date(raw["endDate"]):
        return {}, "startDate is after endDate"
    if raw["timeType"] not in ("PST", "DST"):
        return {}, "timeType must be 'PST' or 'DST'"
    if raw["fileFormat"] != SPEC_PROGRAMS.get(path):
        return {}, f"fileFormat {raw['fileFormat']!r} does not match program {path}"
    if not raw["selectedMeters"]:
        return {}, "selectedMeters is empty"
    if raw["groupOrMeter"] == "group" and raw["group"] != raw["selectedMeters"]:
        return {}, "by group, group must equal selectedMeters"
    if raw["groupOrMeter"] == "meter" and raw["group"] != "":
        return {}, "by meter, group must be present and empty"
    decoded = {name: unquote(value) for name, value in raw.items()}
    decoded["startDate"], decoded["endDate"] = raw["startDate"], raw["endDate"]
    return decoded, None


def _parse_wire_date(value: str) -> date:
    match = _WIRE_DATE.match(value)
    if not match:
        raise ValueError(value)
    month, day, year = (int(g) for g in match.groups())
    return date(year, month, day)


def _page(
    title: str, message: str, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    html = (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{message}</p></body></html>\n"
    )
    return web.Response(text=html, status=status, content_type="text/html", headers=headers)


def _login_page() -> web.Response:
    return _page(
        "OMAR-Online Login", "Your session has expired. Please log in with your certificate."
    )


# -- running it ----------------------------------------------------------------------------


class Running:
    """A started stand-in: its state, its URL, and a way to stop it."""

    def __init__(self, state: StandIn, runner: web.AppRunner, port: int, host: str) -> None:
        self.state = state
        self.runner = runner
        self.port = port
        self.host = host
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"https://{shown}:{port}/"
        state.base_url = self.base_url


async def start(
    state: StandIn,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_tls: ssl.TLSVersion | None = None,
) -> Running:
    """Start serving ``state`` on ``host:port`` (0: any free port) in the running loop."""
    runner = web.AppRunner(state.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=state.ssl_context(max_tls=max_tls))
    await site.start()
    server = site._server
    assert server is not None
    sockets: Any = getattr(server, "sockets", ())
    bound = sockets[0].getsockname()[1]
    return Running(state, runner, bound, host)


class ServerThread:
    """A stand-in running in a background thread with its own loop; it can be stopped and
    started again on the same port (a server restart, or refused connections for a while)."""

    def __init__(
        self,
        pki: TestPKI,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        max_tls: ssl.TLSVersion | None = None,
    ) -> None:
        self.state = StandIn(pki, faults)
        self.host = host
        self.max_tls = max_tls
        self.port = 0
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="omar-standin", daemon=True
        )
        self._running: Running | None = None

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def start(self) -> None:
        """Start listening (again, on the same port once one was chosen)."""
        if not self._thread.is_alive():
            self._thread.start()
        running = self._call(
            start(self.state, host=self.host, port=self.port, max_tls=self.max_tls)
        )
        self._running = running
        self.port = running.port
        self.base_url = running.base_url

    def stop(self) -> None:
        """Stop listening and drop every connection: clients get refused until ``start``."""
        if self._running is not None:
            self._call(self._running.runner.cleanup())
            self._running = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextmanager
def serve_in_thread(
    pki: TestPKI,
    faults: Faults | None = None,
    *,
    host: str = "127.0.0.1",
    max_tls: ssl.TLSVersion | None = None,
) -> Iterator[ServerThread]:
    """Run a stand-in in a background thread with its own loop, for tests and the demo."""
    server = ServerThread(pki, faults, host=host, max_tls=max_tls)
    try:
        server.start()
        yield server
    finally:
        server.close()


def make_pki(folder: Path) -> TestPKI:
    """A fresh stand-in PKI in ``folder``."""
    return TestPKI.create(folder)


__all__ = [
    "ESCAPE_REASON",
    "FAULT_NAMES",
    "LOGIN_FAULTS",
    "SESSION_COOKIE",
    "SPEC_ORDER",
    "SPEC_PROGRAMS",
    "Faults",
    "Running",
    "Seen",
    "ServerThread",
    "StandIn",
    "body_for",
    "make_pki",
    "serve_in_thread",
    "start",
]
