"""``omar-bulk verify``: the archive's promises, checked on demand by reading every byte.

    every journal row that stands for a file ─▶ the file is there, with its size and SHA-256
    every data file under OUT                 ─▶ a journal row stands for it
    every history file                        ─▶ listed in ``versions``, with its size and hash
    the state folder's marks                  ─▶ name each other

Nothing is written: the archive is read as ``status`` reads it (``Archive.reading``), so a
read-only snapshot can be verified. Each problem names its path, what is wrong and the fix.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .archive import DATA_FOLDERS, SERVES_NAME, Archive, read_mark
from .errors import UsageError
from .journal import Unsettled
from .results import Status
from .storage import PART_SUFFIX, STATE_DIR
from .text import printable
from .userfiles import describe

__all__ = ["Problem", "Verdict", "verify"]

#: Where kept versions live, relative to OUT (``versions.archived_as`` starts so).
HISTORY = f"{STATE_DIR}/history"
_BLOCK = 1 << 20
_RERUN = "run the same fetch again: it fetches a missing or changed file anew"


@dataclass(frozen=True, slots=True)
class Problem:
    """One promise that does not hold: where, what is wrong, and what fixes it."""

    path: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{printable(self.path)}: {printable(self.problem)}; {printable(self.fix)}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``verify`` found."""

    out: Path
    state_folder: Path
    files: int
    history: int
    bytes: int
    problems: tuple[Problem, ...]
    notes: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "state_folder": str(self.state_folder),
            "ok": not self.problems,
            "checked": {"files": self.files, "history": self.history, "bytes": self.bytes},
            "problems": [
                {"path": p.path, "problem": p.problem, "fix": p.fix} for p in self.problems
            ],
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class _Expected:
    key: str
    size: int
    sha256: str | None
    missing_fix: str
    changed_fix: str


def _inside(key: str, first: tuple[str, ...]) -> bool:
    parts = key.split("/")
    return parts[0] in first and all(p not in ("", ".", "..") for p in parts)


def verify(
    out: Path,
    *,
    state_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Verdict:
    """Check every promise of the archive in ``out`` (its journal in ``state_dir`` if given,
    found as ``status`` finds it). ``progress(done, total)`` hears of the bytes hashed.

    Raises ``UsageError`` when there is no archive to check (no journal) or it cannot be
    read, or a run of it is in progress (``Archive.idle``); every promise that does not
    hold is a ``Problem`` in the verdict."""
    if not out.is_dir():
        raise UsageError(f"{printable(str(out))} is not a folder")
    archive = Archive.locate(out, state_dir)
    with archive.idle():
        verdict = _verify(archive, out, progress)
    exposed = _exposed(archive)
    if exposed:
        verdict = replace(verdict, problems=(*verdict.problems, *exposed))
    return verdict


def _exposed(archive: Archive) -> list[Problem]:
    """A state folder others can write, or a link: a run refuses it, and the journal every
    verdict rests on could have been written by someone else."""
    found = []
    folders = [archive.inside, archive.folder] if archive.separate else [archive.inside]
    for folder in folders:
        try:
            info = os.lstat(folder)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode) or info.st_mode & 0o022:
            what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "writable by other users"
            found.append(
                Problem(str(folder), f"the state folder is {what}: a run refuses it, and what"
                        " this check trusts (the journal) could have been written by anyone",
                        "make it a real folder of the archive's user, mode 0700, and verify"
                        " again")
            )  # fmt: skip
    return found


def _verify(archive: Archive, out: Path, progress: Callable[[int, int], None] | None) -> Verdict:
    folder, notes = archive.read_folder()
    with archive.reading(strict=True) as journal:
        if journal is None:
            raise UsageError(
                f"{printable(str(out))} has no omar-bulk journal in {printable(str(folder))}:"
                " nothing to verify"
            )
        items, kept = journal.inventory()
        unsettled = journal.unsettled_intents(out)
    problems: list[Problem] = []
    expected: list[_Expected] = []
    standing: dict[str, str] = {}
    for key, status, size, sha in items:
        standing.setdefault(key, status)
        if status != Status.DOWNLOADED:
            continue
        if not _inside(key, DATA_FOLDERS):
            problems.append(
                Problem(key, "a journal row names a path outside the data folders",
                        "the journal was altered: move it aside and run again to rebuild it")
            )  # fmt: skip
            continue
        expected.append(_Expected(key, size, sha, _RERUN, _RERUN))
    listed: set[str] = set()
    for key, size, sha, archived in kept:
        if not _inside(archived, (STATE_DIR,)) or not archived.startswith(HISTORY + "/"):
            problems.append(
                Problem(archived, f"versions of {key} names a path outside the history folder",
                        "the journal was altered: move it aside and run again to rebuild it")
            )  # fmt: skip
            continue
        listed.add(archived)
        lost = "an earlier version cannot be fetched again: restore it from a backup if needed"
        expected.append(_Expected(archived, size, sha, lost, lost))
    downloaded = {e.key for e in expected if not e.key.startswith(HISTORY + "/")}
    files, history, extra = _walk(out)
    for key in files:
        if key not in downloaded:
            said = standing.get(key)
            what = f" (the journal says {said})" if said else ""
            problems.append(
                Problem(key, f"no journal row stands for this file{what}",
                        "if it is not omar-bulk's, move it out of OUT; if it is, fetch its"
                        " month again with --overwrite to record it")
            )  # fmt: skip
    for key in history:
        if key not in listed:
            problems.append(
                Problem(key, "a history file that no row of the journal's versions lists",
                        "the journal lost its record (a rebuilt journal relists only the"
                        " versions of the files it kept): no run needs it; move it out of OUT"
                        " to keep it, or remove it")
            )  # fmt: skip
    problems += extra
    hashed = _hash_all(out, expected, problems, progress)
    if unsettled:
        problems = _stopped_moves(unsettled, problems)
    if folder == archive.folder:  # else no run has used the state folder yet: no marks
        problems += _marks(archive)
    return Verdict(
        out,
        folder,
        files=len(downloaded),
        history=len(listed),
        bytes=hashed,
        problems=tuple(problems),
        notes=tuple(notes),
    )


def _walk(out: Path) -> tuple[set[str], set[str], list[Problem]]:
    """The data files and history files on disk (keys relative to OUT); links and other
    strangers in those folders are problems, leftover ``.part`` files notes."""
    files: set[str] = set()
    history: set[str] = set()
    extra: list[Problem] = []
    for top, into in [(name, files) for name in DATA_FOLDERS] + [(HISTORY, history)]:
        root = out / top
        if os.path.islink(root):  # os.walk would go through it: fetch refuses to
            extra.append(
                Problem(top, "a symbolic link where omar-bulk keeps a folder of its own",
                        "replace the link by the folder it points to (move that folder here):"
                        " omar-bulk never follows links inside OUT")
            )  # fmt: skip
            continue
        for folder, subfolders, names in os.walk(root):
            relative = Path(folder).relative_to(out).as_posix()
            for name in subfolders:
                if os.path.islink(os.path.join(folder, name)):
                    extra.append(
                        Problem(f"{relative}/{name}", "a symbolic link among the data folders",
                                "remove it: omar-bulk never follows links inside OUT")
                    )  # fmt: skip
            for name in names:
                key = f"{relative}/{name}"
                if os.path.islink(os.path.join(folder, name)):
                    extra.append(
                        Problem(key, "a symbolic link, not a file omar-bulk wrote",
                                f"remove it and {_RERUN}")
                    )  # fmt: skip
                elif name.endswith(PART_SUFFIX):
                    continue  # left by an unfinished run: the next run removes it
                else:
                    into.add(key)
    return files, history, extra


def _stopped_moves(unsettled: list[Unsettled], problems: list[Problem]) -> list[Problem]:
    """A run stopped between moving files and recording it (its intent is in the journal)
    leaves files that disagree with their rows: one problem per move that happened, naming
    what the next run does, instead of advice that would remove a file it is about to
    record. A move that never happened explains only the history file made for it, which
    the next run removes; whatever else is wrong with its path is named as it is."""
    moved = [intent for intent in unsettled if intent.moved]
    named = {path for i in moved for path in (i.path, i.archived_as) if path}
    copies = {i.archived_as: i for i in unsettled if not i.moved and i.archived_as}
    kept = []
    for found in problems:
        intent = copies.get(found.path)
        if intent is not None:
            kept.append(
                Problem(found.path, f"made for a move of {intent.path} that a stopped run never"
                        " did", "run the same fetch again: it removes this copy; remove nothing"
                        " meanwhile")
            )  # fmt: skip
        elif found.path not in named:
            kept.append(found)
    for intent in moved:
        what = (
            f"a run was stopped while moving this file to history for {intent.replaced_by}"
            if intent.replaced_by
            else "a run was stopped while putting this file in place: the journal does not"
            " record the file on disk yet"
        )
        earlier = f" (its earlier version: {intent.archived_as})" if intent.archived_as else ""
        kept.append(
            Problem(intent.path, what + earlier,
                    "run the same fetch again: it records what was moved from the files on disk"
                    " and fetches nothing for it; remove nothing meanwhile")
        )  # fmt: skip
    return kept


def _hash_all(
    out: Path,
    expected: list[_Expected],
    problems: list[Problem],
    progress: Callable[[int, int], None] | None,
) -> int:
    """Hash every expected file whole, after checking it is there, a file, with its size.
    A file reached through a link (named by ``_walk``) is not read: a run would not use it."""
    present: list[tuple[_Expected, int]] = []
    linked: dict[str, bool] = {}
    for entry in expected:
        if _through_link(out, entry.key, linked):
            continue
        try:
            info = os.lstat(out / entry.key)
        except FileNotFoundError:
            problems.append(
                Problem(entry.key, f"missing (the journal records {entry.size} bytes)",
                        entry.missing_fix)
            )  # fmt: skip
            continue
        except OSError as exc:
            problems.append(
                Problem(entry.key, f"cannot be read: {exc.strerror}", entry.changed_fix)
            )
            continue
        if stat.S_ISLNK(info.st_mode):
            continue  # named by _walk
        if not stat.S_ISREG(info.st_mode):
            problems.append(
                Problem(entry.key, f"{describe(out / entry.key)} where the journal records a"
                        f" file of {entry.size} bytes", f"remove it and {entry.missing_fix}")
            )  # fmt: skip
            continue
        if info.st_size != entry.size:
            problems.append(
                Problem(entry.key, f"has {info.st_size} bytes, the journal records {entry.size}",
                        entry.changed_fix)
            )  # fmt: skip
            continue
        present.append((entry, info.st_size))
    total = sum(size for _, size in present)
    done = 0
    if progress is not None:
        progress(done, total)
    for entry, _ in present:
        digest = hashlib.sha256()
        try:
            fd = os.open(out / entry.key, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                while block := handle.read(_BLOCK):
                    digest.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
        except OSError as exc:
            problems.append(
                Problem(entry.key, f"cannot be read: {exc.strerror}", entry.changed_fix)
            )
            continue
        if entry.sha256 is not None and digest.hexdigest() != entry.sha256:
            problems.append(
                Problem(entry.key, "its SHA-256 is not the journal's: its bytes changed since"
                        " it was fetched", entry.changed_fix)
            )  # fmt: skip
    return done


def _through_link(out: Path, key: str, linked: dict[str, bool]) -> bool:
    """Is a folder above ``key`` (below OUT) a symbolic link? ``linked`` caches the answers."""
    parts = key.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        folder = "/".join(parts[:depth])
        if folder not in linked:
            linked[folder] = os.path.islink(out / folder)
        if linked[folder]:
            return True
    return False


def _marks(archive: Archive) -> list[Problem]:
    """A separate state folder names OUT, and OUT's pointer names it."""
    if not archive.separate:
        return []
    found: list[Problem] = []
    own, real = os.path.realpath(archive.out), os.path.realpath(archive.folder)
    fix = f"a run of this OUT with --state-dir {archive.folder} writes it"
    serves = read_mark(archive.folder / SERVES_NAME)
    if serves != own:
        what = "missing" if serves is None else f"names {serves}"
        found.append(Problem(str(archive.folder / SERVES_NAME), f"{what}, not {own}", fix))
    pointer = read_mark(archive.pointer)
    if pointer != real:
        what = "missing" if pointer is None else f"names {pointer}"
        found.append(Problem(str(archive.pointer), f"{what}, not {real}", fix))
    return found
