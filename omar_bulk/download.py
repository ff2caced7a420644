"""One answer's body on its way to disk: checked, hashed, written whole or not at all.

The verdicts come from ``answers`` and ``policy``; this module does the reading and writing.
A body becomes a file only when it is complete by its own framing (Content-Length, the last
chunk, or, for a body that ends when the connection closes, the same bytes twice), decoded
only where its encoding proves its own integrity (gzip, zlib), and not an HTML page.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .answers import Head, looks_like_html, page_error
from .errors import RetryableError
from .journal import Entry
from .offload import Offload
from .plan import Item
from .policy import compare
from .results import Observer, Status
from .storage import Storage, translate_os_error

#: Bodies up to this size are gathered in memory and written in one go, by one ``Offload``
#: call (inline on a fast disk, on a thread on a slow one: see ``offload.Offload``).
WHOLE_BODY_LIMIT = 1 << 20
#: Larger bodies go to disk in blocks of at least this size, one ``Offload`` call each: small
#: enough that a block's write on a quick disk stays well under ``storage.SLOW_CALL``.
WRITE_SIZE = 1 << 20
READ_SIZE = 256 << 10


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


@dataclass(frozen=True, slots=True)
class Saved:
    """What one successful attempt left: its status, the body's size and hash, the file's
    time stamp for the journal, and where the version it replaced was kept, if anywhere."""

    status: Status
    size: int
    sha256: str | None
    mtime_ns: int | None
    archived: Path | None = None


class Unconfirmed(RetryableError):
    """A body with no framing arrived whole as far as we can tell; fetch it once more and
    keep it only if the same bytes come back (``digest``)."""

    def __init__(self, digest: str) -> None:
        super().__init__(
            "the body had neither Content-Length nor chunked framing, so a cut cannot be told"
            " from its end; fetching it again to compare"
        )
        self.digest = digest


def _decoder(head: Head) -> Any:
    encoding = head.encoding
    if encoding is None:
        return None
    # 47 = 32 + 15: accept a gzip or zlib header, check the CRC-32 / Adler-32 trailer.
    return zlib.decompressobj(47 if encoding in ("gzip", "x-gzip") else 15)


async def receive(
    response: aiohttp.ClientResponse,
    head: Head,
    work: Work,
    *,
    storage: Storage,
    disk: Offload,
    observer: Observer,
    use_folder: Callable[[str], None],
    confirm: str | None = None,
    landing: Callable[[Work, str | None, int, Path | None], None] | None = None,
) -> Saved:
    """Read a 200 answer's body for ``work`` and settle it on disk (every file system call
    through ``disk``, so that the event loop never waits on it). ``landing`` is told what
    is about to be put in place (the digest, size and where the replaced version will be
    kept) before the first rename: the journal's intent, committed first.

    Raises ``SessionExpired`` or ``PermanentError`` for an HTML page, ``RetryableError``
    for a body that is cut, undecodable or (``Unconfirmed``) not yet confirmed.
    """
    hasher = hashlib.sha256()
    decoder = _decoder(head)
    expected = head.content_length
    # Chunks are kept as aiohttp hands them over and passed on as a list: joining them
    # would copy every byte once more on the event loop, which a large body cannot afford.
    pending: list[bytes] = []
    pending_size = 0
    received = 0
    size = 0
    sink: _BlockSink | None = None
    marked = False
    try:
        async for raw in response.content.iter_chunked(READ_SIZE):
            received += len(raw)
            observer.received(work.item, len(raw), expected)
            chunk = _decode(decoder, raw) if decoder is not None else raw
            if not chunk:
                continue
            size += len(chunk)
            pending.append(chunk)
            pending_size += len(chunk)
            if sink is None and pending_size > WHOLE_BODY_LIMIT:
                head_bytes = b"".join(pending)
                if looks_like_html(head_bytes[:64], head.content_type):
                    raise await _page(head_bytes, work, storage, disk)
                use_folder(work.key)
                marked = True
                fd = await disk.call(storage.create_part, work.key)
                sink = _BlockSink(fd, hasher, storage.part(work.key), disk)
            if sink is not None and pending_size >= WRITE_SIZE:
                await sink.put(pending)
                pending, pending_size = [], 0
        if expected is not None and received != expected:
            raise RetryableError(f"body cut short: {received} of {expected} bytes (Content-Length)")
        if decoder is not None:
            tail = _finish(decoder)
            if tail:
                size += len(tail)
                pending.append(tail)
        body = b""
        if sink is None:
            body = b"".join(pending)
            if looks_like_html(body[:64], head.content_type):
                raise await _page(body, work, storage, disk)
            hasher.update(body)
        else:
            if pending:
                await sink.put(pending)
            await sink.close()
            sink = None
        if not head.framed and confirm != hasher.hexdigest():
            raise Unconfirmed(hasher.hexdigest())
        digest = hasher.hexdigest() if size else None
        status, keep = compare(work.previous, digest)
        if status == Status.FAILED:  # an empty answer, where the file holds data: it stays
            previous = work.previous
            assert previous is not None and not marked
            return Saved(Status.FAILED, 0, None, previous.mtime_ns)
        if status == Status.UNCHANGED:
            if marked:
                await disk.call(storage.discard, work.key)
            previous = work.previous
            assert previous is not None
            return Saved(Status.UNCHANGED, size, digest, previous.mtime_ns)
        if size and not marked:
            use_folder(work.key)
            marked = True
            whole = True
        else:
            whole = False
        archive = None
        if keep and work.previous is not None:
            archive = await disk.call(storage.history_path, work.key, work.previous.fetched_at)
        if landing is not None and size:
            landing(work, digest, size, archive)
        # One call for all the outcome's file system work: one hop when it goes to a thread.
        return await disk.settle(_settle, storage, work, status, archive, size, digest, body, whole)
    except BaseException:
        if sink is not None:
            await sink.abort()
        if marked:
            await disk.call(storage.discard, work.key)
        raise


def _settle(
    storage: Storage,
    work: Work,
    status: Status,
    archive: Path | None,
    size: int,
    digest: str | None,
    body: bytes,
    whole: bool,
) -> Saved:
    """Put a checked body in place: ``body`` written ``whole``, else the ``.part`` streamed
    already (none for an empty body), keeping the replaced version in ``archive``."""
    if not size:
        if archive is not None:
            storage.retire(work.key, archive)
        return Saved(status, 0, None, None, archive)
    if whole:
        mtime = storage.write_whole(work.key, body, archive)
    else:
        mtime = storage.commit(work.key, archive)
    return Saved(status, size, digest, mtime, archive)


async def keep_error_page(
    response: aiohttp.ClientResponse,
    head: Head,
    work: Work,
    storage: Storage,
    limit: int,
    disk: Offload,
) -> str:
    """For a failed answer: keep its HTML page for diagnosis; a suffix for the message."""
    from .answers import page_headline
    from .session import read_upto

    body = await read_upto(response, limit)
    if not looks_like_html(body, head.content_type):
        return ""
    saved = await disk.call(storage.save_error_page, work.key, body)
    return f": {page_headline(body)!r} (page kept at {saved})"


async def _page(body: bytes, work: Work, storage: Storage, disk: Offload) -> Exception:
    """The error for an HTML page where data should be; other pages are kept."""
    from .answers import is_login_page

    if is_login_page(body):
        return page_error(body, None)
    return page_error(body, await disk.call(storage.save_error_page, work.key, body))


def _decode(decoder: Any, raw: bytes) -> bytes:
    try:
        data: bytes = decoder.decompress(raw)
    except zlib.error as exc:
        raise RetryableError(f"the compressed body does not decode ({exc})") from None
    return data


def _finish(decoder: Any) -> bytes:
    try:
        tail: bytes = decoder.flush()
    except zlib.error as exc:  # pragma: no cover - flush rarely fails where decompress did not
        raise RetryableError(f"the compressed body does not decode ({exc})") from None
    if not decoder.eof:
        raise RetryableError("the compressed body was cut short (its trailer never arrived)")
    if decoder.unused_data:
        raise RetryableError("the compressed body has bytes after its end")
    return tail


class _BlockSink:
    """A large body's way to disk, a block at a time: hashed on the event loop while the
    block is still in the processor's cache from its decryption, then written by one
    ``Offload`` call (one ``writev``, no join: inline while the disk is quick, on a thread
    once it is slow) while the loop reads on. One block in flight keeps the file in order
    and memory flat.

    Measured on a 1 GiB body over TLS (benchmarks/README.md): handing each block to a pool
    thread to hash and write cost more processor time (the block crosses to another core,
    and the GIL changes hands) than it won back by overlapping, on a machine whose other
    core serves or does other work.
    """

    def __init__(self, fd: int, hasher: Any, part: Path, disk: Offload) -> None:
        self._fd: int | None = fd
        self._hasher = hasher
        self._part = part
        self._disk = disk
        self._inflight: asyncio.Future[None] | None = None

    async def put(self, chunks: list[bytes]) -> None:
        await self._drain()
        update = self._hasher.update
        for chunk in chunks:
            update(chunk)
        assert self._fd is not None
        self._inflight = asyncio.ensure_future(self._disk.call(_write_all, self._fd, chunks))

    async def close(self) -> None:
        await self._drain()
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                # A network file system reports a failed write here, at close: the body is
                # not kept unless close succeeds.
                await self._disk.call(os.close, fd)
            except OSError as exc:
                raise translate_os_error(exc, self._part) from exc

    async def abort(self) -> None:
        """Let the block in flight finish (it is short), then close; never raises. The
        descriptor is never closed under a write still running on its thread."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(inflight)
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if inflight is not None and not inflight.done():
            inflight.add_done_callback(functools.partial(_close_after, fd))
        else:
            with contextlib.suppress(OSError):
                os.close(fd)

    async def _drain(self) -> None:
        inflight = self._inflight
        if inflight is None:
            return
        try:
            # Shielded: a cancelled download leaves the block in flight for ``abort``.
            await asyncio.shield(inflight)
        except OSError as exc:
            self._inflight = None
            raise translate_os_error(exc, self._part) from exc
        self._inflight = None


def _close_after(fd: int, block: asyncio.Future[None]) -> None:
    if not block.cancelled():
        block.exception()  # seen: a failed write is already reported, or moot after a cancel
    with contextlib.suppress(OSError):
        os.close(fd)


#: How many buffers one ``writev`` call is given at most (POSIX guarantees at least 16;
#: Linux allows 1024).
_IOV_MAX = 512


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` to ``fd`` in order."""
    for first in range(0, len(chunks), _IOV_MAX):
        batch = chunks[first : first + _IOV_MAX]
        written = os.writev(fd, batch)
        if written < sum(map(len, batch)):
            _finish_write(fd, batch, written)


def _finish_write(fd: int, batch: list[bytes], written: int) -> None:
    """The rest of a short ``writev`` (a full disk reports itself on the next write)."""
    for chunk in batch:
        if written >= len(chunk):
            written -= len(chunk)
            continue
        view = memoryview(chunk)[written:]
        written = 0
        while view:
            view = view[os.write(fd, view) :]


__all__ = ["WHOLE_BODY_LIMIT", "Saved", "Unconfirmed", "Work", "keep_error_page", "receive"]
