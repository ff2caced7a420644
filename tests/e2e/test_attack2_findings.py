"""Findings of a second hostile review (the daily job, the state folder, the disk work).

Each test states a promise of README.md, CHANGELOG.md or docs/RELIABILITY.md and fails on the
code as it stood when the review began; it is meant to pass once the code is fixed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from omar_bulk import Settings, load_manifest
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread, serve_in_thread

from ..conftest import Cli, data_files

FIXTURE_0_1_0 = Path(__file__).parent.parent / "fixtures" / "out-0.1.0"


def _asked(server: ServerThread, since: int) -> int:
    return len(server.state.downloads()) - since


def _status(cli: Cli, manifest: Path, *extra: str) -> int:
    return cli("status", str(cli.out), "--manifest", str(manifest), *extra, auth=False).exit_code


# -- another chunking over the same OUT takes a manifest's file away for good -------------------


def test_a_longer_file_of_another_chunking_does_not_take_a_months_file_away(
    cli: Cli, tmp_path: Path
) -> None:
    """A monthly archive, then one ad-hoc ``--chunk none`` pull of the same meter over the
    quarter (one file for an analysis) into the same OUT. The quarter file starts on
    January's first day and is longer, so it "supersedes" January: the monthly file goes to
    history and its row is marked superseded. From then on the monthly manifest's fetch
    calls January "skipped" (exit 0) although no January file is in meter/, while
    ``status --manifest`` says January is missing (exit 1): fetch and status disagree every
    morning, and no run will ever bring January back."""
    monthly = tmp_path / "monthly.toml"
    monthly.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = 2024-03-31\n')
    assert cli("fetch", str(monthly)).exit_code == 0
    assert _status(cli, monthly) == 0
    january = cli.out / "meter" / "M1" / "M1_20240101_20240131_PST.mdef"
    assert january.is_file()

    adhoc = cli("fetch", "--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31",
                "--chunk", "none")  # fmt: skip
    assert adhoc.exit_code == 0

    again = cli("fetch", str(monthly))
    # the monthly pull's own file is still where its manifest expects it ...
    assert january.is_file(), "the monthly January file was moved to history by another pull"
    # ... and fetch and status agree about the monthly manifest
    assert (again.exit_code, _status(cli, monthly)) == (0, 0)


# -- a dry run over a journal of an earlier release ----------------------------------------------


def test_the_dry_run_over_a_0_1_0_archive_is_not_a_traceback(cli: Cli) -> None:
    """README step 4 says: see what a run would do (``--dry-run``), then do it. After an
    upgrade the journal is still format 0 (only a real run migrates it), and the dry run
    dies with ``sqlite3.OperationalError: no such column: superseded_by`` (a traceback,
    exit 1): ``journal.get`` selects a column that format 0 and 1 journals lack."""
    shutil.copytree(FIXTURE_0_1_0, cli.out)
    outcome = cli(
        "fetch", "--out", str(cli.out), "--meter", "M1", "--start", "2024-03-01",
        "--end", "2024-03-01", "--chunk", "day", "--dry-run", auth=False,
    )  # fmt: skip
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit)
    assert outcome.exit_code == 0
    assert outcome.stdout == ""  # the 0.1.0 run fetched that day: nothing is due


# -- an empty answer for a grown chunk ----------------------------------------------------------


def test_an_empty_answer_for_the_grown_month_does_not_retire_its_data(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """The daily recipe. On 03-15 March (01..14) lands with data. On 04-01 the whole March
    (01..31) is answered with an empty 200 (the server's "no data", or a glitch): the longer
    empty entry "supersedes" the file holding 14 days of data, which leaves meter/ for
    history. ``status`` then shows March as empty and complete (exit 0), and an empty item
    is never asked again (outside ``--revisit-days``): the archive lost March's data
    silently. An empty answer should not replace data (or at least not count as complete)."""
    manifest = tmp_path / "daily.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-02-01\nend = "yesterday"\n')
    assert cli("fetch", str(manifest), "--today", "2024-03-15").exit_code == 0
    partial = cli.out / "meter" / "M1" / "M1_20240301_20240314_PST.mdef"
    assert partial.stat().st_size > 0

    faults.script = {"M1": ["empty"]}
    # one request on 04-01: March whole (February is done and outside any revisit window)
    assert cli("fetch", str(manifest), "--today", "2024-04-01").exit_code == 0
    march = list((cli.out / "meter" / "M1").glob("M1_202403*"))
    assert march, "March's data left meter/ for history, replaced by an empty answer"


# -- one state folder, two output folders --------------------------------------------------------


def test_one_state_folder_given_for_two_output_folders_does_not_mix_them(
    cli: Cli, tmp_path: Path
) -> None:
    """``OMAR_STATE_DIR`` is the kind of thing set once in a profile. Two backfills into two
    OUTs then share one journal, whose keys are relative to OUT: ``status`` of the second OUT
    lists the first OUT's files as downloaded and calls it complete (exit 0), and a rerun
    decides against the other folder's rows. Nothing records which OUT a state folder
    serves; either refuse a state folder that belongs to another OUT (exit 2) or keep them
    apart."""
    env = {"OMAR_STATE_DIR": str(tmp_path / "state")}
    first, second = tmp_path / "first", tmp_path / "second"
    one = ["--start", "2024-01-01", "--end", "2024-02-29"]
    assert cli("fetch", "--out", str(first), "--meter", "M1", *one, env=env).exit_code == 0
    other = cli("fetch", "--out", str(second), "--meter", "M2", *one, env=env)
    view = cli("status", str(second), "--json", env=env, auth=False)
    if other.exit_code == 2:  # refused: the state folder serves another OUT; fine
        return
    listed = json.dumps(json.loads(view.stdout))
    assert "M1" not in listed, "status of the second OUT lists the first OUT's meter"


# -- an OUT on a network share, upgraded from 0.1.0 ------------------------------------------------


def test_an_archive_on_a_network_share_upgraded_from_0_1_0_is_not_fetched_again(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0.1.0 kept its journal in ``OUT/.omar-bulk`` wherever OUT was. 0.2.0 moves the state of
    an OUT on NFS/SMB/FUSE to ``$XDG_STATE_HOME/omar-bulk/<hash>`` by default, which is empty
    on the first run after the upgrade: the journal (and its versions) in OUT/.omar-bulk is
    ignored, and every file of the archive is downloaded again from the production server
    (7 of 7 here; 20,000 for a real archive), with only a warning. CHANGELOG promises that
    "a journal written by an older release is migrated in place on the first run". The
    upgrade should use (or move) the journal it finds in OUT, or stop and say how."""
    from omar_bulk import archive

    from ..fixtures.make_out_0_1_0 import MANIFEST

    shutil.copytree(FIXTURE_0_1_0, cli.out)
    share = str(cli.out)
    real = archive.network_filesystem
    monkeypatch.setattr(
        archive,
        "network_filesystem",
        lambda path: "NFS" if str(Path(path).absolute()).startswith(share) else real(path),
    )
    manifest = tmp_path / "old.toml"
    manifest.write_text(MANIFEST)
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    assert cli.server is not None
    outcome = cli("fetch", str(manifest), "--today", "2024-03-02", env=env)
    assert cli.server.state.downloads() == [], outcome.stderr


# -- Ctrl-C while a slow disk finishes a rename -------------------------------------------------


def test_a_file_renamed_into_place_as_the_run_is_stopped_is_in_the_journal(
    pki: TestPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a slow disk (calls on Offload's threads) a revised body is renamed into place and
    the replaced version moved to history; Ctrl-C arrives before the call returns. The task
    waits for the call (Offload's promise: "whatever the call made is known to the code that
    cleans up"), then reports the item ``interrupted`` and records nothing: the new file is
    in meter/ under a journal row holding the old size and SHA-256, and the history file
    is listed in no ``versions`` row (RELIABILITY: "the journal lists them all"). Seen by
    hand with strace delaying renames by 400 ms: 26 files on disk, 25 in the journal."""
    import hashlib
    import sqlite3
    import time

    from omar_bulk import storage as storage_module
    from omar_bulk.run import StopSignal, fetch_async

    monkeypatch.setenv("OMAR_OFFLOAD", "thread")
    faults = Faults(retry_after=0)
    out = tmp_path / "out"
    manifest = tmp_path / "one.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = 2024-01-31\n')
    with serve_in_thread(pki, faults) as server:

        def settings(**extra: object) -> Settings:
            return Settings(
                plan=load_manifest(manifest),
                base_url=server.base_url,
                out_dir=out,
                cert=pki.client_p12,
                ca_bundle=pki.ca,
                password=lambda _what: DEMO_PASSWORD,
                concurrency=1,
                retry_wait=0.01,
                **extra,  # type: ignore[arg-type]
            )

        assert asyncio.run(fetch_async(settings())).exit_code == 0
        faults.revision = 1
        stop = StopSignal()
        original = storage_module.Storage.write_whole

        def slow_write_whole(self, key, data, archive=None):  # type: ignore[no-untyped-def]
            mtime = original(self, key, data, archive)
            stop.request()  # Ctrl-C while the disk is still busy with this call
            time.sleep(0.3)
            return mtime

        monkeypatch.setattr(storage_module.Storage, "write_whole", slow_write_whole)
        result = asyncio.run(
            asyncio.wait_for(fetch_async(settings(overwrite=True), stop=stop), timeout=20)
        )
    assert result.exit_code in (0, 130)
    db = sqlite3.connect(out / ".omar-bulk" / "journal.sqlite3")
    try:
        rows = dict(db.execute("SELECT path, sha256 FROM items").fetchall())
        kept = [row[0] for row in db.execute("SELECT archived_as FROM versions")]
    finally:
        db.close()
    for file in data_files(out):
        key = str(file.relative_to(out))
        assert rows.get(key) == hashlib.sha256(file.read_bytes()).hexdigest(), key
    for old in (out / ".omar-bulk" / "history").rglob("*.mdef.*"):
        assert str(old.relative_to(out)) in kept, f"{old.name} is in history, not in the journal"


# -- a disk that is slow only sometimes ---------------------------------------------------------


def test_a_disk_slow_only_sometimes_does_not_hold_the_loop_at_every_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A disk (or a share) that stalls one call in four for 50 ms, with calls 0.5 s apart.
    Offload sends calls to threads for ``PROBE_AFTER`` (1 s) after a stall, then tries one
    inline: it is quick, so the probe interval is reset to 1 s, and the next stall lands on
    the event loop again. The doubling of the probe interval never builds up, and every
    stall holds every download: 10 of 10 here. README: "A slow disk never holds the run
    back". Once a disk has shown it stalls, a quick probe should not forget it at once."""
    from types import SimpleNamespace

    from omar_bulk import offload as offload_module
    from omar_bulk.offload import Offload

    now = [100.0]
    monkeypatch.setattr(offload_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    count = [0]

    def sometimes_slow() -> None:
        count[0] += 1
        if count[0] % 4 == 0:
            now[0] += 0.05

    async def main() -> int:
        disk = Offload(2, mode="auto")
        for _ in range(40):
            await disk.call(sometimes_slow)
            now[0] += 0.5
        disk.close()
        return disk.slow_calls  # stalls that ran on the event loop

    on_the_loop = asyncio.run(main())
    assert on_the_loop <= 3, f"{on_the_loop} of 10 stalls held the event loop"


# -- --report and --metrics over a journal kept in --state-dir ----------------------------------


@pytest.mark.parametrize("option", ["--report", "--metrics"])
def test_report_and_metrics_never_overwrite_a_journal_kept_in_the_state_folder(
    cli: Cli, tmp_path: Path, option: str
) -> None:
    """The guard against ``--report``/``--metrics`` naming omar-bulk's own files looks only
    under OUT. With ``--state-dir S`` (or the local folder an OUT on a share gets),
    ``--report S/journal.sqlite3`` writes the JSON report over the journal (exit 0); the next
    run sets the journal aside as damaged and rebuilds it from the last report only, losing
    its ``versions``. The state folder is omar-bulk's own too."""
    state = tmp_path / "state"
    where = ["--state-dir", str(state), "--meter", "M1", "--start", "2024-01-01",
             "--end", "2024-01-31"]  # fmt: skip
    assert cli("fetch", *where).exit_code == 0
    journal = state / "journal.sqlite3"
    cli("fetch", *where, option, str(journal))
    assert journal.read_bytes()[:16] == b"SQLite format 3\x00"


# -- an id dropped from the manifest -------------------------------------------------------------


def test_an_id_dropped_from_the_manifest_does_not_keep_status_failing(
    cli: Cli, faults: Faults, tmp_path: Path
) -> None:
    """A meter that was retired answers 404; the user takes it out of the daily manifest.
    The fetch is then clean (exit 0), but ``status --manifest`` keeps counting the dropped
    meter's old failure: exit 1 every morning, for something no run will ever try again (the
    very thing issue 12 set out to end). With ``--manifest``, status should judge what the
    manifest plans."""
    faults.script = {"M9": ["404*"]}
    manifest = tmp_path / "daily.toml"
    manifest.write_text('[[pull]]\nmeters = ["M1", "M9"]\nstart = 2024-01-01\nend = 2024-01-31\n')
    assert cli("fetch", str(manifest)).exit_code == 1
    manifest.write_text('[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\nend = 2024-01-31\n')
    assert cli("fetch", str(manifest)).exit_code == 0
    assert _status(cli, manifest) == 0


# -- status without the --state-dir the fetch used ------------------------------------------------


def test_status_without_the_fetchs_state_dir_says_where_to_look(cli: Cli, tmp_path: Path) -> None:
    """``fetch --state-dir S`` then ``status OUT`` (the flag forgotten once, or cron's
    environment without OMAR_STATE_DIR): "OUT has no omar-bulk journal: nothing was fetched
    there yet", exit 2, while OUT holds the files. The message should say the journal may
    be in another state folder (--state-dir / OMAR_STATE_DIR), not that nothing was fetched."""
    where = ["--state-dir", str(tmp_path / "state"), "--meter", "M1", "--start", "2024-01-01",
             "--end", "2024-01-31"]  # fmt: skip
    assert cli("fetch", *where).exit_code == 0
    view = cli("status", str(cli.out), auth=False)
    assert view.exit_code != 0
    assert "nothing was fetched" not in view.stderr
    assert "--state-dir" in view.stderr or "OMAR_STATE_DIR" in view.stderr


# -- N-day chunks under a rolling start ----------------------------------------------------------


def test_n_day_chunks_with_a_rolling_start_do_not_refetch_the_whole_window_daily(
    cli: Cli, tmp_path: Path
) -> None:
    """README and RELIABILITY warn that a rolling start (``start = "-1826d"``) makes *the
    first chunk* one day shorter every morning. With ``chunk = "7d"`` every chunk is counted
    from the start, so every boundary moves each day: the next morning re-requests the whole
    window (18 of 18 chunks here; about 26,000 requests a day for 100 meters over five years,
    against a shared production server), 18 more files pile up, and ``status`` calls the
    36 files complete. Refuse the combination (exit 2), anchor N-day chunks to something
    that does not roll, or at least warn and document it."""
    assert cli.server is not None
    manifest = tmp_path / "roll.toml"
    manifest.write_text(
        'chunk = "7d"\n[[pull]]\nmeters = ["M1"]\nstart = "-120d"\nend = "yesterday"\n'
    )
    first = cli("fetch", str(manifest), "--today", "2024-06-01")
    if first.exit_code == 2:  # refused before anything was sent: fine
        return
    before = len(cli.server.state.downloads())
    cli("fetch", str(manifest), "--today", "2024-06-02")
    assert _asked(cli.server, before) <= 2, "the whole window was requested again"
