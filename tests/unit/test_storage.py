"""Where the output folder puts things, on temporary folders: no server, no subprocess.

The path rules, and every way into the disk refusing a link planted inside OUT, fast enough for
every mutant of storage.py (``make mutation``); the runs that meet those links are in
e2e/test_storage.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from omar_bulk.errors import UnsafePathError
from omar_bulk.storage import Storage

from ..conftest import untouched, victim

KEY = "meter/M1/M1_20240101_20240131_PST.mdef"
#: 2024-01-01T00:01:01Z
WHEN = 1_704_067_261.0


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    made = Storage(tmp_path / "out")
    made.prepare()
    yield made
    made.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- names ---------------------------------------------------------------------------------------


def test_a_key_names_its_file_its_part_and_its_history(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "out")
    assert storage.path_of(KEY) == f"{tmp_path}/out/{KEY}"
    assert storage.final(KEY) == tmp_path / "out" / KEY
    assert storage.part(KEY) == tmp_path / "out" / f"{KEY}.part"
    assert storage.state == tmp_path / "out" / ".omar-bulk"
    assert storage.history == tmp_path / "out" / ".omar-bulk" / "history"
    assert storage.errors == tmp_path / "out" / ".omar-bulk" / "errors"


def test_a_history_name_carries_the_utc_time_of_the_fetch(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Far from UTC, so a local-time stamp would differ.
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    try:
        archive = storage.history_path(KEY, WHEN)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert archive == storage.history / f"{KEY}.20240101T000101Z"


def test_a_taken_history_name_gets_the_next_free_number(storage: Storage) -> None:
    first = storage.history_path(KEY, WHEN)
    assert first.name == "M1_20240101_20240131_PST.mdef.20240101T000101Z"
    first.parent.mkdir(parents=True)
    first.write_bytes(b"one")
    second = storage.history_path(KEY, WHEN)
    assert second == first.with_name(f"{first.name}-1")
    second.write_bytes(b"two")
    # A dangling link takes its name too: nothing is ever written through it.
    third = first.with_name(f"{first.name}-2")
    third.symlink_to(first.parent / "nowhere")
    assert storage.history_path(KEY, WHEN) == first.with_name(f"{first.name}-3")
    first.with_name(f"{first.name}-3").write_bytes(b"four")
    assert storage.history_path(KEY, WHEN) == first.with_name(f"{first.name}-4")
    # Another second is another name.
    assert storage.history_path(KEY, WHEN + 1) == first.with_name(
        "M1_20240101_20240131_PST.mdef.20240101T000102Z"
    )


# --- folders inside and outside the root ---------------------------------------------------------


def inside_spellings(root: Path) -> list[str]:
    text = os.fspath(root)
    return [
        f"{text}/trap/sub",
        f"{text}/trap/sub/",
        f"{text}//trap/sub",
        f"{text}/./trap/sub",
    ]


@pytest.mark.parametrize("spelling", range(4))
def test_no_spelling_of_a_folder_inside_the_root_follows_a_planted_link(
    storage: Storage, tmp_path: Path, spelling: int
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (storage.root / "trap").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError):
        storage.make_dirs(inside_spellings(storage.root)[spelling])
    assert list(elsewhere.iterdir()) == []


def test_a_relative_root_is_the_same_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    storage = Storage(Path("out"))
    try:
        storage.prepare()
        (tmp_path / "out" / "trap").symlink_to(elsewhere)
        for name in ("out/trap/sub", "./out/trap/sub", "out/./trap/sub"):
            with pytest.raises(UnsafePathError):
                storage.make_dirs(name)
        storage.make_dirs("./out")  # the root itself
        storage.make_dirs("./out/meter/M1")
        assert mode(tmp_path / "out" / "meter" / "M1") == 0o700
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
            ".omar-bulk",
            "meter",
            "trap",
        ]
        for root in ("./out", "out/", "./out/."):
            with pytest.raises(ValueError, match="is not a file inside"):
                storage.keep(root, storage.history_path(KEY, WHEN))
    finally:
        storage.close()
    assert list(elsewhere.iterdir()) == []


def test_the_root_itself_in_any_spelling_is_made_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        for spelling in ("{}", "{}/", "{}//"):
            root = tmp_path / f"root{len(spelling)}"
            storage = Storage(root)
            try:
                storage.make_dirs(spelling.format(root))
            finally:
                storage.close()
            assert root.is_dir() and mode(root) == 0o700
    finally:
        os.umask(old)


def test_folders_inside_the_root_are_made_0700_whatever_the_umask(storage: Storage) -> None:
    old = os.umask(0o022)
    try:
        storage.make_dirs(storage.root / "meter" / "MX" / "deep")
    finally:
        os.umask(old)
    made = storage.root / "meter" / "MX" / "deep"
    assert made.is_dir()
    assert [mode(p) for p in (made, made.parent, made.parent.parent)] == [0o700] * 3


def test_a_folder_outside_the_root_follows_the_users_links(
    storage: Storage, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "chosen").symlink_to(real)
    storage.make_dirs(tmp_path / "chosen" / "reports")
    assert (real / "reports").is_dir() and mode(real / "reports") == 0o700
    # A sibling whose name starts like the root's is outside it.
    storage.make_dirs(f"{storage.root}-2/x")
    assert (tmp_path / "out-2" / "x").is_dir()


# --- keeping a version: files inside the root only -----------------------------------------------


def test_keep_links_the_current_file_into_history(storage: Storage) -> None:
    storage.make_dirs(storage.final(KEY).parent)
    storage.final(KEY).write_bytes(b"version one")
    archive = storage.history_path(KEY, WHEN)
    storage.keep(storage.final(KEY), archive)
    assert archive.read_bytes() == b"version one"
    assert os.path.samefile(archive, storage.final(KEY))
    # A key whose folder and name end in the characters a strip could eat.
    odd = "meter/MX/MX_20240101_20240131_PSTX"
    storage.make_dirs(storage.final(odd).parent)
    storage.final(odd).write_bytes(b"x")
    storage.keep(str(storage.final(odd)), storage.history / "meter" / "MX" / "keptX")
    assert (storage.history / "meter" / "MX" / "keptX").read_bytes() == b"x"


def test_keep_of_a_missing_file_keeps_nothing(storage: Storage) -> None:
    archive = storage.history_path(KEY, WHEN)
    storage.keep(storage.final(KEY), archive)
    assert not os.path.lexists(archive)


@pytest.mark.parametrize("where", ["root", "root/", "outside", "sibling"])
def test_keep_refuses_what_is_not_a_file_inside_the_root(
    storage: Storage, tmp_path: Path, where: str
) -> None:
    names: dict[str, Path | str] = {
        "root": storage.root,
        "root/": f"{storage.root}/",
        "outside": tmp_path / "elsewhere" / "file",
        "sibling": Path(f"{storage.root}-2") / "file",
    }
    with pytest.raises(ValueError, match="is not a file inside"):
        storage.keep(names[where], storage.history_path(KEY, WHEN))
    with pytest.raises(ValueError, match="is not a file inside"):
        storage.keep(storage.final(KEY), Path(names[where]))


# --- the .part sweep -----------------------------------------------------------------------------


def planted(storage: Storage, folder: str) -> Path:
    where = storage.root / folder
    where.mkdir(parents=True, exist_ok=True)
    for name in ("a.mdef.part", "b.csv.part", "c.mdef", "d.part.bak", "partial"):
        (where / name).write_bytes(b"x")
    (where / "e.part").mkdir()  # not a file: left alone, and the sweep goes on
    return where


def remaining(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir())


@pytest.mark.parametrize("spelling", ["meter/MX", "/meter/MX/", "meter/MX/"])
def test_the_sweep_removes_every_part_file_of_the_folder_only(
    storage: Storage, spelling: str
) -> None:
    where = planted(storage, "meter/MX")
    other = planted(storage, "meter/M2")
    storage.sweep_parts(spelling)
    assert remaining(where) == ["c.mdef", "d.part.bak", "e.part", "partial"]
    assert len(remaining(other)) == 6


def test_the_sweep_of_the_root_and_of_nothing(storage: Storage, tmp_path: Path) -> None:
    (storage.root / "stale.part").write_bytes(b"x")
    storage.sweep_parts("")
    assert not (storage.root / "stale.part").exists()
    storage.sweep_parts("meter/never-made")  # no folder: nothing to do, no error
    assert not (storage.root / "meter" / "never-made").exists()


def test_the_sweep_does_not_enter_a_linked_folder(storage: Storage, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.part").write_bytes(b"x")
    (storage.root / "meter").mkdir()
    (storage.root / "meter" / "M1").symlink_to(elsewhere)
    storage.sweep_parts("meter/M1")
    assert remaining(elsewhere) == ["precious.part"]


@pytest.mark.parametrize("folder", ["../victim", "meter/../../victim", "./../victim"])
def test_the_sweep_never_climbs_out_of_the_root(storage: Storage, folder: str) -> None:
    """``..`` is no link, so ``O_NOFOLLOW`` alone would let it lead out of the root: a folder
    spelled with it is refused, and the sweep removes nothing outside."""
    victim = storage.root.parent / "victim"
    victim.mkdir()
    (victim / "important.part").write_bytes(b"precious")
    storage.sweep_parts(folder)
    assert (victim / "important.part").read_bytes() == b"precious"
    with pytest.raises(UnsafePathError, match="outside the output folder"):
        storage.make_dirs(f"{storage.root}/meter/../../victim")


M1_JAN = "meter/M1/M1_20240101_20240131_PST.mdef"


def storage_in(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "out")
    storage.prepare()
    return storage


def test_a_part_name_planted_as_a_link_is_refused_not_truncated(tmp_path: Path) -> None:
    """write_whole and open_part never open a ``.part`` link; a stale regular ``.part`` is
    simply replaced."""
    storage = storage_in(tmp_path)
    target = victim(tmp_path)
    storage.make_dirs(storage.final(M1_JAN).parent)
    storage.part(M1_JAN).symlink_to(target)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        storage.write_whole(M1_JAN, b"data")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        asyncio.run(storage.open_part(M1_JAN))
    assert untouched(target) and storage.part(M1_JAN).is_symlink()
    assert not storage.final(M1_JAN).exists()

    stale = "meter/M1/M1_20240201_20240229_PST.mdef"
    storage.part(stale).write_bytes(b"left by a killed run")
    storage.write_whole(stale, b"fresh")
    assert storage.final(stale).read_bytes() == b"fresh" and not storage.part(stale).exists()


def test_an_id_folder_planted_as_a_link_receives_nothing(tmp_path: Path) -> None:
    """A link where the id folder (or the kind folder) belongs fails the item; nothing lands
    in the folder it points at."""
    storage = storage_in(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (storage.root / "meter").mkdir(mode=0o700)
    (storage.root / "meter" / "M1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="meter/M1 is a symbolic link"):
        storage.write_whole(M1_JAN, b"data")
    with pytest.raises(UnsafePathError):
        asyncio.run(storage.open_part(M1_JAN))
    (storage.root / "group").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="group is a symbolic link"):
        storage.write_whole("group/G1/G1_20240101_20240131_PST.mdef", b"data")
    assert list(outside.iterdir()) == []


def test_a_data_file_swapped_for_a_link_is_not_archived_through_it(tmp_path: Path) -> None:
    """keep and retire refuse a link at the data file's name: its target is not hard-linked,
    copied or chmodded into history, and the link stays where it is."""
    storage = storage_in(tmp_path)
    target = victim(tmp_path)
    storage.write_whole(M1_JAN, b"version one")
    storage.final(M1_JAN).unlink()
    storage.final(M1_JAN).symlink_to(target)
    archive = storage.history_path(M1_JAN, 1_700_000_000.0)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        storage.write_whole(M1_JAN, b"version two", archive)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        storage.retire(M1_JAN, archive)
    assert untouched(target)
    assert storage.final(M1_JAN).is_symlink() and not os.path.lexists(archive)
    assert not storage.part(M1_JAN).exists()


def test_history_and_errors_folders_planted_as_links_receive_nothing(tmp_path: Path) -> None:
    """``.omar-bulk/history`` and ``.omar-bulk/errors`` as links: the archive and the error
    page fail the item instead of landing elsewhere."""
    storage = storage_in(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    storage.history.symlink_to(outside, target_is_directory=True)
    storage.errors.symlink_to(outside, target_is_directory=True)
    storage.write_whole(M1_JAN, b"version one")
    with pytest.raises(UnsafePathError, match="history is a symbolic link"):
        storage.write_whole(M1_JAN, b"two", storage.history_path(M1_JAN, 1_700_000_000.0))
    with pytest.raises(UnsafePathError, match="errors is a symbolic link"):
        storage.save_error_page(M1_JAN, b"<html><title>oops</title></html>")
    assert list(outside.rglob("*")) == []
    assert storage.final(M1_JAN).read_bytes() == b"version one"


def test_the_sweep_removes_part_links_but_never_their_targets_or_linked_folders(
    tmp_path: Path,
) -> None:
    """A stale ``.part`` that is a link is removed (the link, not its target); a folder that
    is a link is not entered, so ``.part`` files elsewhere survive."""
    storage = storage_in(tmp_path)
    target = victim(tmp_path)
    storage.make_dirs(storage.final(M1_JAN).parent)
    storage.part(M1_JAN).symlink_to(target)
    storage.sweep_parts("meter/M1")
    assert not os.path.lexists(storage.part(M1_JAN)) and untouched(target)

    outside = tmp_path / "other"
    outside.mkdir()
    (outside / "someone.part").write_bytes(b"not ours")
    (storage.root / "meter" / "M2").symlink_to(outside, target_is_directory=True)
    storage.sweep_parts("meter/M2")
    assert (outside / "someone.part").read_bytes() == b"not ours"
