"""The download engine: a bounded worker pool that settles every planned item.

Data flow::

    plan ──▶ producer ──(bounded queue)──▶ N workers ──▶ download (.part → rename)
               │ policy.decide: skip what          │         └──▶ journal, report, observer
               │ the journal vouches for           └── session (login when first needed)
               └─ policy.superseded: shorter files of a chunk that grew go to history

The producer walks the lazy plan and hands work to ``concurrency`` workers through a queue of
twice that size, so memory stays flat however long the plan is, and no task is created per item.
Each worker owns an item from first attempt to final outcome; retry state is per item. What an
answer means is decided in ``answers``, whether to skip in ``policy``, how long to wait and how
many at once in ``politeness``; the engine only carries those decisions out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from .answers import judge_download, looks_like_html
from .download import WHOLE_BODY_LIMIT, Saved, Unconfirmed, Work, keep_error_page, receive
from .errors import (
    AuthError,
    LocalWriteError,
    OmarBulkError,
    PermanentError,
    RetryableError,
    SessionExpired,
    UnreachableError,
    UnsafePathError,
)
from .journal import Entry, Journal
from .offload import Offload
from .plan import Item
from .policy import EMPTY_OVER_DATA, KEPT, decide, needs_disk_check, on_disk, replacing
from .politeness import AdaptiveLimit, Backoff, RateLimiter, RetryBudget
from .protocol import relative_key, request_url
from .report import ReportWriter
from .results import ItemResult, Observer, Status, Tally
from .session import Session, head_of
from .settings import Settings
from .storage import Storage


class Engine:
    """Runs one plan to completion, interruption or a fatal error."""

    def __init__(
        self,
        settings: Settings,
        *,
        ssl_context: Any,
        journal: Journal,
        storage: Storage,
        report: ReportWriter,
        observer: Observer,
        tally: Tally,
        revisit_from: date | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.storage = storage
        self.report = report
        self.observer = observer
        self.tally = tally
        #: Items whose range ends on or after this date are fetched again (``--revisit-days``).
        self.revisit_from = revisit_from
        self.failures: list[ItemResult] = []
        self.interrupted = False
        self.backoff = Backoff(settings.retry_wait, settings.max_retry_wait)
        self.session = Session(settings, ssl_context, observer, self.backoff)
        self.gate = AdaptiveLimit(settings.concurrency, observer.pool)
        self._limiter = RateLimiter(settings.rate)
        self._main: asyncio.Task[Any] | None = None
        self._folders: set[str] = set()
        #: A first run's journal holds nothing a settled item could replace.
        self._fresh = False
        #: Outcomes the journal could not take when they came (see ``record_unrecorded``).
        self._unrecorded: list[tuple[Work, ItemResult, Saved | None]] = []
        #: Every file system call of the downloads goes through here (never waits on the loop).
        self.disk = Offload(settings.concurrency)

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
        concurrency = self.settings.concurrency
        try:
            async with self.session.running():
                queue: asyncio.Queue[Work | None] = asyncio.Queue(maxsize=2 * concurrency)
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._produce(items, queue))
                        for _ in range(concurrency):
                            group.create_task(self._work(queue))
                finally:
                    self.disk.close()
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

    # -- producer and workers --------------------------------------------------------------

    async def _produce(self, items: Iterable[Item], queue: asyncio.Queue[Work | None]) -> None:
        base = self.settings.base_url
        overwrite = self.settings.overwrite
        cutoff = self.revisit_from
        self._fresh = self.journal.is_empty()
        # One range read gives the item's entry and the other files of its chunk (a partial
        # month's shorter versions): no extra query per item to clean those up.
        lookup = self.journal.same_start if not self._fresh else _nothing
        for item in items:
            key = relative_key(item)
            url = request_url(base, item)
            rows = lookup(key)
            entry = next((row for row in rows if row.path == key), None)
            present = needs_disk_check(entry) and await self._still_good(entry, key)
            due = decide(item, entry, present, overwrite=overwrite, revisit_from=cutoff)
            if not due.fetch:
                assert entry is not None
                final = self.storage.final(key)
                result = ItemResult(item, url, final, Status.SKIPPED, entry.bytes, entry.sha256)
                self._finish(result)
                if len(rows) > 1 and entry.superseded_by is None:
                    self._supersede(item, key, rows)  # piles left by an earlier release
                continue
            await queue.put(Work(item, url, key, due.previous))
        for _ in range(self.settings.concurrency):
            await queue.put(None)

    async def _still_good(self, entry: Entry | None, key: str) -> bool:
        """True when the disk still agrees with the journal's entry (hashing off the loop,
        and only when the time stamp moved)."""
        assert entry is not None
        final = self.storage.final(key)
        check = on_disk(entry, final, may_hash=False)
        if check.good is None:
            check = await asyncio.to_thread(on_disk, entry, final, may_hash=True)
        if check.good and check.rehashed:
            self.journal.touch(entry.path, final.stat().st_mtime_ns)
        if check.reason:
            self.observer.notice(check.reason)
        return bool(check.good)

    async def _work(self, queue: asyncio.Queue[Work | None]) -> None:
        while True:
            work = await queue.get()
            if work is None:
                return
            sent = [0]
            try:
                result, saved = await self._fetch(work, sent)
            except asyncio.CancelledError:
                # Stopped by a signal, or by another worker's fatal error: either way the
                # request went out, and the report says so.
                if sent[0]:
                    self._unsettled(work, sent[0])
                raise
            except _FATAL as fatal:
                if sent[0]:
                    self._ended_run(work, sent[0], fatal)
                raise
            self._finish(result, saved, work)
            # A file renamed into place while the run was being stopped is recorded above;
            # the stop that waited for it takes effect now.
            self.disk.pay_cancellation()

    def _unsettled(self, work: Work, attempts: int) -> None:
        """Report an item the server had already been asked for (in flight, or waiting out a
        Retry-After) when the run was interrupted or aborted: attempted, not settled. The
        journal keeps what it had, so the next run asks again."""
        result = ItemResult(
            work.item,
            work.url,
            self.storage.final(work.key),
            Status.INTERRUPTED,
            attempts=attempts,
            error="the run stopped before the item was settled",
        )
        self.report.add(result)
        self.tally.add(result)

    def _ended_run(self, work: Work, attempts: int, fatal: OmarBulkError) -> None:
        """Account for the item whose attempt met the error that ends the run (a 403, a
        refused login, a full disk): failed, in the report and, if it can still be written,
        the journal (a refetch's earlier file stays, as for any failed refetch)."""
        result = ItemResult(
            work.item,
            work.url,
            self.storage.final(work.key),
            Status.FAILED,
            attempts=attempts,
            error=f"{fatal}; the run was aborted",
        )
        with contextlib.suppress(OmarBulkError):  # the run's own error says why
            self.journal.record(work.key, result, None, previous=work.previous)
        self.report.add(result)
        self.tally.add(result)
        if len(self.failures) < 1000:
            self.failures.append(result)

    def _finish(
        self, result: ItemResult, saved: Saved | None = None, work: Work | None = None
    ) -> None:
        if result.status != Status.SKIPPED and work is not None:
            try:
                self._record(work, result, saved)
            except LocalWriteError:
                # The journal cannot be written now (a full disk): the outcome is kept for
                # ``record_unrecorded`` once the run has freed what it can, and reported.
                self._unrecorded.append((work, result, saved))
                self.report.add(result)
                self.tally.add(result)
                raise
        self.report.add(result)
        self.tally.add(result)
        if result.status == Status.FAILED and len(self.failures) < 1000:
            self.failures.append(result)
        self.observer.finished(result)
        if work is not None and not self._fresh and result.status in _LANDED:
            self._supersede(work.item, work.key, self.journal.same_start(work.key))

    def _record(self, work: Work, result: ItemResult, saved: Saved | None) -> None:
        self.journal.record(
            work.key,
            result,
            saved.mtime_ns if saved else None,
            previous=work.previous,
            archived_as=self._relative(saved.archived if saved else None),
        )

    def record_unrecorded(self) -> None:
        """Journal the outcomes whose journal write failed during the run (a data file that
        landed as the disk filled up), now that the run's ``.part`` files are gone: without
        its row the file would be fetched again. Raises LocalWriteError if it still fails."""
        while self._unrecorded:
            work, result, saved = self._unrecorded[0]
            self._record(work, result, saved)
            del self._unrecorded[0]

    def _supersede(self, item: Item, key: str, rows: list[Entry]) -> None:
        """Move the shorter files of ``item``'s chunk to history and say so in the journal.

        Small renames on the loop, as ``download`` does for small files: a grown chunk
        replaces at most one file a day.
        """
        chunk = replacing(item, key, rows)
        for kept in chunk.held:
            self.observer.notice(
                f"{key} was answered empty, but the shorter {kept.path} holds data: both are"
                " kept (a revisit of the longer one that brings data settles it)"
            )
        for old in chunk.retired:
            archived: str | None = None
            if old.status == Status.DOWNLOADED:
                archive = self.storage.history_path(old.path, old.fetched_at)
                self.journal.intend(
                    old.path,
                    url="",
                    chunk=old.chunk,
                    sha256=old.sha256,
                    size=old.bytes,
                    archived_as=self._relative(archive),
                    replaced_by=key,
                )
                try:
                    self.storage.retire(old.path, archive)
                except UnsafePathError as exc:
                    self.journal.drop_intent(old.path)
                    self.observer.notice(f"{exc}; it still stands for {key}'s chunk")
                    continue
                if archive.exists():
                    archived = self._relative(archive)
            self.journal.supersede(old, key, archived)
            self.tally.superseded += 1

    async def _fetch(self, work: Work, sent: list[int]) -> tuple[ItemResult, Saved | None]:
        """Every attempt for one item, until it is settled (``sent[0]``: requests sent)."""
        final = self.storage.final(work.key)
        attempts = 0
        budget = RetryBudget(self.settings.retries)
        confirm: str | None = None
        sent_under = [0]  # the login an attempt's request actually went out with
        while True:
            attempts += 1
            await self.session.ready()
            try:
                saved = await self._gated_attempt(work, final, attempts, sent_under, confirm, sent)
                error = None
                if saved.status == Status.FAILED:  # policy.compare: the data stays
                    error = EMPTY_OVER_DATA.format(path=final)
                    self.observer.notice(error)
                result = ItemResult(
                    work.item,
                    work.url,
                    final,
                    saved.status,
                    saved.size,
                    saved.sha256,
                    attempts,
                    error,
                )
                return result, saved
            except PermanentError as exc:
                failed = ItemResult(
                    work.item, work.url, final, Status.FAILED, attempts=attempts, error=str(exc)
                )
                return failed, None
            except RetryableError as exc:
                if isinstance(exc, Unconfirmed):
                    confirm = exc.digest
                ordinary = isinstance(exc, SessionExpired) and self.session.ordinary_expiry()
                if not budget.spend(ordinary_expiry=ordinary):
                    error = str(exc)
                    if isinstance(exc, SessionExpired):
                        error += " (the session could not be kept open)"
                    failed = ItemResult(
                        work.item,
                        work.url,
                        final,
                        Status.FAILED,
                        attempts=attempts,
                        error=f"{error}; gave up after {attempts} attempts",
                    )
                    return failed, None
                if isinstance(exc, SessionExpired):
                    delay = 0.0  # renewing the session waits when the server is in trouble
                elif isinstance(exc, Unconfirmed):
                    delay = 0.0  # not a failure: the second copy is the check
                else:
                    delay = self.backoff.delay(attempts, exc.retry_after)
                self.observer.retrying(work.item, attempts, str(exc), delay)
                if delay:
                    await asyncio.sleep(delay)  # outside the gate: waiting holds no slot
                if isinstance(exc, SessionExpired):
                    await self._renew(sent_under[0])

    async def _gated_attempt(
        self,
        work: Work,
        final: Path,
        attempts: int,
        sent_under: list[int],
        confirm: str | None,
        sent: list[int],
    ) -> Saved:
        """One attempt inside the adaptive limit, telling it how the server answered.

        ``sent_under[0]`` is set to the login generation current when the request leaves:
        waiting for a slot can outlast a login, and an expiry must renew the right one.
        """
        epoch = await self.gate.acquire()
        clean = pushback = False
        try:
            await self._limiter.wait()
            generation = sent_under[0] = self.session.generation
            sent[0] += 1
            self.observer.started(work.item, final, attempts)
            outcome = await self._attempt(work, confirm, generation)
            clean = True
            return outcome
        except RetryableError as exc:
            # A session that expires before serving anything is a server in trouble.
            pushback = exc.pushback or (isinstance(exc, SessionExpired) and self.session.troubled())
            raise
        finally:
            self.gate.release(epoch, clean=clean, pushback=pushback)

    async def _renew(self, generation: int) -> None:
        try:
            await self.session.renew(generation)
        except RetryableError as exc:
            # The login itself failed for now; the item's next attempt will find out again.
            await asyncio.sleep(self.backoff.delay(1, exc.retry_after))

    async def _attempt(self, work: Work, confirm: str | None, generation: int) -> Saved:
        """One request for one item: a settled file (``Saved``) or an ItemError."""
        async with self.session.get(work.url) as response:
            head = head_of(response)
            verdict = judge_download(head, work.url)
            if verdict is None and not looks_like_html(b"", head.content_type):
                # Data is on its way under this login: counted now, not when the body is
                # done, so that expiries answered meanwhile do not look like a broken login.
                self.session.served_one(generation)
            if isinstance(verdict, PermanentError):
                page = await keep_error_page(
                    response, head, work, self.storage, WHOLE_BODY_LIMIT, self.disk
                )
                raise PermanentError(f"{verdict}{page}")
            if verdict is not None:
                raise verdict
            return await receive(
                response,
                head,
                work,
                storage=self.storage,
                disk=self.disk,
                observer=self.observer,
                use_folder=self._use_folder,
                confirm=confirm,
                landing=self._landing,
            )

    def _landing(self, work: Work, digest: str | None, size: int, archive: Path | None) -> None:
        """Commit the journal's intent before a file is renamed into place (its outcome's
        commit clears it): a run killed in between is settled by the next one. A journal
        that cannot take it (a full disk) stops the file before it lands."""
        self.journal.intend(
            work.key,
            url=work.url,
            chunk=work.item.chunk or None,
            sha256=digest,
            size=size,
            archived_as=self._relative(archive),
        )

    def _relative(self, path: Path | None) -> str | None:
        return str(path.relative_to(self.storage.root)) if path is not None else None

    def _use_folder(self, key: str) -> None:
        """Tell the journal, once per folder and run, before a ``.part`` file goes there."""
        folder = key.rpartition("/")[0]
        if folder not in self._folders:
            self.journal.use_folder(folder)
            self._folders.add(folder)


#: Outcomes after which an item's file (or recorded empty answer) stands for its chunk.
_LANDED = (*KEPT, Status.REVISED, Status.UNCHANGED)


def _nothing(_key: str) -> list[Entry]:
    """The journal's answer for every item of a first run: nothing recorded yet."""
    return []


#: The errors that end a run (``_first_fatal`` raises the first one met).
_FATAL = (AuthError, LocalWriteError, UnreachableError)


def _first_fatal(group: BaseExceptionGroup[BaseException]) -> OmarBulkError | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_fatal(exc)
            if found is not None:
                return found
        elif isinstance(exc, _FATAL):
            return exc
    return None


__all__ = ["Engine"]
