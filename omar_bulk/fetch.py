"""The download engine: one session, a bounded worker pool, retries, verified files.

Data flow::

    plan ──▶ producer ──(bounded queue)──▶ N workers ──▶ storage (.part → rename)
               │  skips what the journal vouches for        └──▶ journal, report, observer

The producer walks the lazy plan and hands work to ``concurrency`` workers through a queue of
twice that size, so memory stays flat however long the plan is, and no task is created per item.
Each worker owns an item from first attempt to final outcome; retry state is per item.

aiohttp's exceptions become omar-bulk's in one place, ``classify_client_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import hashlib
import math
import random
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from .errors import (
    AuthError,
    ConnectionDropped,
    ItemError,
    LocalWriteError,
    OmarBulkError,
    PermanentError,
    RetryableError,
    SessionExpired,
    UnreachableError,
)
from .journal import Entry, Journal, hash_matches, vouches
from .plan import Item
from .politeness import AdaptiveLimit
from .protocol import relative_key, request_url
from .report import ReportWriter
from .results import (
    DOWNLOADED,
    EMPTY,
    FAILED,
    REVISED,
    SKIPPED,
    UNCHANGED,
    ItemResult,
    Observer,
    Tally,
)
from .settings import Settings
from .storage import Storage, looks_like_html, page_headline, translate_os_error

#: Bodies up to this size are gathered in memory and written in one go, on the event loop:
#: measured on 2 cores, a thread hop per small file cost about 25% of a 2,000-file run in GIL
#: hand-offs, more than the open, write and rename it would move off the loop.
WHOLE_BODY_LIMIT = 1 << 20
#: Larger bodies stream through aiofiles in writes of at least this size (a hop per call).
WRITE_SIZE = 1 << 20
READ_SIZE = 256 << 10
READ_BUFFER = 1 << 20
#: Never wait longer than this for one Retry-After, whatever the server asks.
RETRY_AFTER_CAP = 600.0
_LOGIN_MARKERS = re.compile(
    rb"log\s*-?\s*in|sign\s*-?\s*in|session\s+(has\s+)?(expired|timed\s*out)", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Saved:
    """What one successful attempt left: its status, the body's size and hash, the file's
    time stamp for the journal, and where the version it replaced was kept, if anywhere."""

    status: str
    size: int
    sha256: str | None
    mtime_ns: int | None
    archived: Path | None = None


@dataclass(frozen=True, slots=True)
class Work:
    """An item on its way to a worker, with what the producer already worked out.

    ``previous`` is the journal's verified entry when a done item is fetched again
    (``--revisit-days``, ``--overwrite``): the new bytes are compared with it.
    """

    item: Item
    url: str
    key: str
    previous: Entry | None = None


def classify_client_error(exc: BaseException, timeout: float) -> OmarBulkError:
    """Translate an aiohttp, asyncio or ssl exception into the omar-bulk tree.

    TLS problems that another attempt cannot cure (the server's certificate does not verify,
    the server refuses ours with an alert) are fatal ``AuthError``s; everything else that can
    go wrong on the wire is worth retrying.
    """
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
        if "ALERT" in reason.upper() or "CERTIFICATE" in reason.upper():
            return AuthError(
                f"the server refused our client certificate (TLS alert: {reason}); check that"
                " --cert is the certificate registered for OMAR-Online and is still valid"
            )
        if any(w in reason.upper() for w in ("VERSION", "PROTOCOL", "HANDSHAKE", "CIPHER")):
            return AuthError(f"TLS handshake failed: {reason}")
        return RetryableError(f"TLS error: {reason}")
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return RetryableError(f"timed out: nothing received for {timeout:g} s")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return RetryableError("body cut short: the connection broke during the transfer")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionDropped("the server closed the connection without an answer")
    if _was_reset(exc):
        return ConnectionDropped(f"the server reset the connection ({exc or type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RetryableError(f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return RetryableError(f"connection error: {exc or type(exc).__name__}")
    return RetryableError(f"{type(exc).__name__}: {exc}")


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
        f"the server's certificate does not verify ({detail}); if the server uses a private CA,"
        " give its certificate with --ca-bundle"
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


class RateLimiter:
    """Spaces request starts at least ``1/rate`` seconds apart, across all workers."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self._interval  # reserved before awaiting: no lock needed
        if slot > now:
            await asyncio.sleep(slot - now)


class Engine:
    """Runs one plan to completion, interruption or a fatal error."""

    def __init__(
        self,
        settings: Settings,
        *,
        ssl_context: ssl.SSLContext,
        journal: Journal,
        storage: Storage,
        report: ReportWriter,
        observer: Observer,
        tally: Tally,
    ) -> None:
        self.settings = settings
        self.ssl_context = ssl_context
        self.journal = journal
        self.storage = storage
        self.report = report
        self.observer = observer
        self.tally = tally
        self.failures: list[ItemResult] = []
        self.interrupted = False
        self._main: asyncio.Task[Any] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._generation = 0
        self._login_lock = asyncio.Lock()
        self._limiter = RateLimiter(settings.rate)
        self.gate = AdaptiveLimit(settings.concurrency, observer.pool)
        self._rng = random.Random()
        self._folders: set[str] = set()
        #: Items whose range ends on or after this date are fetched again (``--revisit-days``).
        self.revisit_from: date | None = None

    # -- control ---------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Stop starting work and cancel what is in flight (called in the loop on a signal)."""
        if self.interrupted:
            self.observer.notice("already stopping; cleaning up")
            return
        self.interrupted = True
        self.observer.notice("interrupted: stopping, cleaning up partial files")
        if self._main is not None:
            self._main.cancel()

    async def run(self, items: Iterable[Item]) -> None:
        """Fetch every item; raise AuthError, LocalWriteError or UnreachableError if fatal."""
        self._main = asyncio.current_task()
        settings = self.settings
        connector = aiohttp.TCPConnector(
            ssl=self.ssl_context,
            limit=settings.concurrency,
            limit_per_host=settings.concurrency,
            enable_cleanup_closed=True,
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.timeout, sock_read=settings.timeout
        )
        try:
            async with aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # keep cookies for IP-address hosts
                auto_decompress=False,
                # aiohttp's 64 KiB default pauses and resumes the socket constantly on a
                # large body; the buffer only fills that far when the disk falls behind.
                read_bufsize=READ_BUFFER,
                headers={"Accept-Encoding": "identity", "User-Agent": _user_agent()},
            ) as session:
                self._session = session
                await self._open_session()
                queue: asyncio.Queue[Work | None] = asyncio.Queue(maxsize=2 * settings.concurrency)
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._produce(items, queue))
                    for _ in range(settings.concurrency):
                        group.create_task(self._work(queue))
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except BaseExceptionGroup as group_error:
            fatal = _first_fatal(group_error)
            if fatal is None:
                raise
            raise fatal from None
        finally:
            self._session = None

    # -- session ---------------------------------------------------------------------------

    async def _open_session(self) -> None:
        """Request the base URL once so every download carries the session cookie."""
        last: OmarBulkError | None = None
        all_dropped = True
        for attempt in range(1, self.settings.retries + 2):
            try:
                await self._login()
                return
            except RetryableError as exc:
                last = exc
                all_dropped = all_dropped and isinstance(exc, ConnectionDropped)
                if attempt > self.settings.retries:
                    break
                delay = self._backoff(attempt, exc.retry_after)
                self.observer.notice(f"login failed ({exc}); retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
        if all_dropped:
            raise AuthError(
                f"could not open a session at {self.settings.base_url}: every attempt was closed"
                " without an answer right after the TLS handshake, which is how some servers"
                " refuse a client certificate; check that --cert is the certificate registered"
                " for OMAR-Online"
            )
        raise UnreachableError(
            f"could not open a session at {self.settings.base_url}: {last}; nothing was fetched,"
            " run the same command again later"
        )

    async def _login(self) -> None:
        assert self._session is not None
        url = URL(self.settings.base_url, encoded=True)
        try:
            async with self._session.get(url, allow_redirects=True) as response:
                body = await _read_upto(response, WHOLE_BODY_LIMIT)
                status = response.status
                reason = response.reason or ""
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise classify_client_error(exc, self.settings.timeout) from exc
        if status in (401, 403):
            raise AuthError(
                f"the server refused the login with {status} {reason}: check that the certificate"
                " is registered for OMAR-Online"
            )
        if status == 400 and b"certificate" in body.lower():
            # nginx and others answer a refused client certificate with a 400 page
            raise AuthError(f"the server refused our client certificate: {page_headline(body)!r}")
        if status == 429 or status >= 500:
            raise RetryableError(f"login answered {status} {reason}")
        if status >= 400:
            raise UnreachableError(f"login at {self.settings.base_url} answered {status} {reason}")

    async def _relogin(self, generation: int) -> None:
        """Open a new session once per expiry, however many workers noticed it."""
        async with self._login_lock:
            if generation != self._generation:
                return  # another worker already logged in again
            await self._login()
            self._generation += 1

    # -- producer and workers --------------------------------------------------------------

    async def _produce(self, items: Iterable[Item], queue: asyncio.Queue[Work | None]) -> None:
        base = self.settings.base_url
        overwrite = self.settings.overwrite
        cutoff = self.revisit_from
        lookup = self.journal.get if not self.journal.is_empty() else _nothing
        for item in items:
            key = relative_key(item)
            url = request_url(base, item)
            previous = None
            entry = lookup(key)
            if entry is not None and entry.status in (DOWNLOADED, EMPTY):
                again = overwrite or (cutoff is not None and item.end >= cutoff)
                good = await self._still_good(entry, key)
                if good and not again:
                    final = self.storage.final(key)
                    self._finish(ItemResult(item, url, final, SKIPPED, entry.bytes, entry.sha256))
                    continue
                previous = entry if good else None
            await queue.put(Work(item, url, key, previous))
        for _ in range(self.settings.concurrency):
            await queue.put(None)

    async def _still_good(self, entry: Entry, key: str) -> bool:
        """True when the journal vouches for this item and the disk still agrees."""
        final = self.storage.final(key)
        good, reason = vouches(entry, final)
        if good is None:
            good, reason = await asyncio.to_thread(hash_matches, entry, final)
            if good:
                self.journal.touch(entry.path, final.stat().st_mtime_ns)
        if reason:
            self.observer.notice(reason)
        return bool(good)

    async def _work(self, queue: asyncio.Queue[Work | None]) -> None:
        while True:
            work = await queue.get()
            if work is None:
                return
            result, saved = await self._fetch(work)
            self._finish(result, saved, work)

    def _finish(
        self, result: ItemResult, saved: Saved | None = None, work: Work | None = None
    ) -> None:
        if result.status != SKIPPED and work is not None:
            archived = saved.archived if saved else None
            self.journal.record(
                work.key,
                result,
                saved.mtime_ns if saved else None,
                previous=work.previous,
                archived_as=str(archived.relative_to(self.storage.root)) if archived else None,
            )
        self.report.add(result)
        self.tally.add(result)
        if result.status == FAILED and len(self.failures) < 1000:
            self.failures.append(result)
        self.observer.finished(result)

    async def _fetch(self, work: Work) -> tuple[ItemResult, Saved | None]:
        """Every attempt for one item, until it is settled."""
        final = self.storage.final(work.key)
        attempts = 0
        while True:
            attempts += 1
            generation = self._generation
            try:
                saved = await self._gated_attempt(work, final, attempts)
                result = ItemResult(
                    work.item, work.url, final, saved.status, saved.size, saved.sha256, attempts
                )
                return result, saved
            except PermanentError as exc:
                return ItemResult(
                    work.item, work.url, final, FAILED, attempts=attempts, error=str(exc)
                ), None
            except RetryableError as exc:
                if attempts > self.settings.retries:
                    error = str(exc)
                    if isinstance(exc, SessionExpired):
                        error += " (the session could not be kept open)"
                    return ItemResult(
                        work.item,
                        work.url,
                        final,
                        FAILED,
                        attempts=attempts,
                        error=f"{error}; gave up after {attempts} attempts",
                    ), None
                if isinstance(exc, SessionExpired):
                    await self._relogin_or_wait(generation)
                    delay = 0.0
                else:
                    delay = self._backoff(attempts, exc.retry_after)
                self.observer.retrying(work.item, attempts, str(exc), delay)
                if delay:
                    await asyncio.sleep(delay)  # outside the gate: waiting holds no slot

    async def _gated_attempt(self, work: Work, final: Path, attempts: int) -> Saved:
        """One attempt inside the adaptive limit, telling it how the server answered."""
        epoch = await self.gate.acquire()
        clean = pushback = False
        try:
            await self._limiter.wait()
            self.observer.started(work.item, final, attempts)
            outcome = await self._attempt(work)
            clean = True
            return outcome
        except RetryableError as exc:
            pushback = exc.pushback
            raise
        finally:
            self.gate.release(epoch, clean=clean, pushback=pushback)

    async def _relogin_or_wait(self, generation: int) -> None:
        try:
            await self._relogin(generation)
        except RetryableError as exc:
            # The login itself failed for now; the item's next attempt will find out again.
            await asyncio.sleep(self._backoff(1, exc.retry_after))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, never shorter than the server's Retry-After."""
        ceiling = min(self.settings.max_retry_wait, self.settings.retry_wait * 2 ** (attempt - 1))
        delay = self._rng.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def _attempt(self, work: Work) -> Saved:
        """One request for one item: (status, bytes, sha256, mtime_ns) or an ItemError."""
        assert self._session is not None
        try:
            async with self._session.get(
                URL(work.url, encoded=True), allow_redirects=False
            ) as response:
                return await self._receive(response, work)
        except (ItemError, AuthError, LocalWriteError):
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise classify_client_error(exc, self.settings.timeout) from exc

    async def _receive(self, response: aiohttp.ClientResponse, work: Work) -> Saved:
        status = response.status
        reason = response.reason or ""
        if status in (401, 403):
            raise AuthError(
                f"the server answered {status} {reason} to {work.url}: this certificate is not"
                " allowed to download; check its registration in OMAR-Online"
            )
        if 300 <= status < 400:
            where = response.headers.get("Location", "elsewhere")
            raise SessionExpired(f"redirected to {where}: the login session expired")
        if status == 429 or status >= 500:
            raise RetryableError(
                f"HTTP {status} {reason}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                pushback=status in (429, 503),
            )
        content_type = response.headers.get("Content-Type")
        if status != 200:
            body = await _read_upto(response, WHOLE_BODY_LIMIT)
            detail = ""
            if looks_like_html(body, content_type):
                saved = self.storage.save_error_page(work.key, body)
                detail = f": {page_headline(body)!r} (page kept at {saved})"
            raise PermanentError(f"HTTP {status} {reason}{detail}")
        expected = response.content_length
        if content_type and "text/html" in content_type.lower():
            await self._html_answer(await _read_upto(response, WHOLE_BODY_LIMIT), work)
        return await self._save_body(response, work, expected)

    async def _html_answer(self, body: bytes, work: Work) -> None:
        """An HTML page where data should be: a login page (retry) or an error (fail)."""
        if _LOGIN_MARKERS.search(body[:65536]):
            raise SessionExpired(f"login page {page_headline(body)!r}: the session expired")
        saved = self.storage.save_error_page(work.key, body)
        raise PermanentError(
            f"the server sent an HTML page instead of data: {page_headline(body)!r}"
            f" (kept at {saved})"
        )

    async def _save_body(
        self, response: aiohttp.ClientResponse, work: Work, expected: int | None
    ) -> Saved:
        hasher = hashlib.sha256()
        # Chunks are kept as aiohttp hands them over and passed on as a list: joining them
        # would copy every byte once more on the event loop, which a large body cannot afford.
        pending: list[bytes] = []
        pending_size = 0
        received = 0
        sink: _BlockSink | None = None
        marked = False
        try:
            async for chunk in response.content.iter_chunked(READ_SIZE):
                received += len(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                self.observer.received(work.item, len(chunk), expected)
                if sink is None and pending_size > WHOLE_BODY_LIMIT:
                    head = b"".join(pending)[:64]
                    if looks_like_html(head, None):
                        await self._html_answer(b"".join(pending), work)
                    self._use_folder(work.key)
                    marked = True
                    part = self.storage.part(work.key)
                    sink = _BlockSink(await self.storage.open_part(work.key), hasher, part)
                if sink is not None and pending_size >= WRITE_SIZE:
                    await sink.put(pending)
                    pending, pending_size = [], 0
            if expected is not None and received != expected:
                raise RetryableError(
                    f"body cut short: {received} of {expected} bytes (Content-Length)"
                )
            body = b""
            if sink is None:
                body = b"".join(pending)
                if received and looks_like_html(body[:64], None):
                    await self._html_answer(body, work)
                hasher.update(body)
            else:
                if pending:
                    await sink.put(pending)
                await sink.close()
                sink = None
            digest = hasher.hexdigest() if received else None
            status, archive = self._compare(work, digest)
            if status == UNCHANGED:
                if marked:
                    self.storage.discard(work.key)
                previous = work.previous
                assert previous is not None
                return Saved(UNCHANGED, received, digest, previous.mtime_ns)
            if not received:
                if archive is not None:
                    self.storage.retire(work.key, archive)
                return Saved(status, 0, None, None, archive)
            if not marked:
                self._use_folder(work.key)
                marked = True
                # Written right here: on two cores, handing a small file to a thread costs
                # more (GIL hand-offs) than the open, write and rename themselves.
                mtime = self.storage.write_whole(work.key, body, archive)
                return Saved(status, received, digest, mtime, archive)
            mtime = self.storage.commit(work.key, archive)
            return Saved(status, received, digest, mtime, archive)
        except BaseException:
            if sink is not None:
                await sink.abort()
            if marked:
                self.storage.discard(work.key)
            raise

    def _compare(self, work: Work, digest: str | None) -> tuple[str, Path | None]:
        """Status of a complete body against the version it would replace, and where that
        version is to be kept if it changed."""
        previous = work.previous
        if previous is None:
            return (DOWNLOADED if digest else EMPTY), None
        if (previous.status == EMPTY and digest is None) or (
            previous.status == DOWNLOADED and previous.sha256 == digest
        ):
            return UNCHANGED, None
        if previous.status == DOWNLOADED:
            return REVISED, self.storage.history_path(work.key, previous.fetched_at)
        return REVISED, None

    def _use_folder(self, key: str) -> None:
        """Tell the journal, once per folder and run, before a ``.part`` file goes there."""
        folder = key.rpartition("/")[0]
        if folder not in self._folders:
            self.journal.use_folder(folder)
            self._folders.add(folder)


class _BlockSink:
    """A large body's way to disk: each block is written through aiofiles while a thread
    hashes it (hashlib lets go of the GIL), so the event loop goes on decrypting the next
    block meanwhile. One block in flight at a time keeps the hash in order and memory flat."""

    def __init__(self, handle: Any, hasher: Any, part: Path) -> None:
        self._handle = handle
        self._hasher = hasher
        self._part = part
        self._inflight: asyncio.Future[Any] | None = None

    async def put(self, chunks: list[bytes]) -> None:
        await self._drain()
        self._inflight = asyncio.ensure_future(self._store(chunks))

    async def close(self) -> None:
        await self._drain()
        try:
            await self._handle.close()
        except OSError as exc:
            raise translate_os_error(exc, self._part) from exc

    async def abort(self) -> None:
        """Let the block in flight finish (it is short), then close; never raises."""
        if self._inflight is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self._inflight)
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.shield(self._handle.close())

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def _store(self, chunks: list[bytes]) -> None:
        try:
            await asyncio.gather(
                self._handle.writelines(chunks), asyncio.to_thread(_hash_all, self._hasher, chunks)
            )
        except OSError as exc:
            raise translate_os_error(exc, self._part) from exc


def _hash_all(hasher: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


async def _read_upto(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body (``StreamReader.read(n)`` may return fewer)."""
    data = bytearray()
    while len(data) < limit:
        chunk = await response.content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _nothing(_key: str) -> None:
    """The journal's answer for every item of a first run: nothing recorded yet."""
    return None


def _first_fatal(group: BaseExceptionGroup[BaseException]) -> OmarBulkError | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_fatal(exc)
            if found is not None:
                return found
        elif isinstance(exc, AuthError | LocalWriteError | UnreachableError):
            return exc
    return None


def _user_agent() -> str:
    from . import __version__

    return f"omar-bulk/{__version__}"
