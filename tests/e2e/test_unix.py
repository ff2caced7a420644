"""omar-bulk among Unix tools: /dev/null, FIFOs and sockets as output targets, ``-`` for
standard input and output, bounded reads of what the user names, passwords from files.

Device nodes are this test's own, made with ``mknod`` in its temporary folder (root only): the
machine's /dev is never written to. Every command runs as a real process with a deadline, so a
run that would hang fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from omar_bulk import userfiles
from omar_bulk.errors import LocalWriteError, ManifestError, UsageError
from omar_bulk.manifest import load_manifest
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import ServerThread

from ..conftest import need_command

DEADLINE = 60
ONE_MONTH = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-01-31"]
#: A major number Linux keeps for local use: no driver answers it, so nothing is written.
UNUSED_MAJOR = 240


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without any OMAR_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMAR_")}
    env.update(extra)
    return env


def omar(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    pass_fds: tuple[int, ...] = (),
    limit_memory: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``omar-bulk ARGS`` as its own process, with a deadline."""

    def limited() -> None:
        if limit_memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_memory, limit_memory))

    return subprocess.run(
        [sys.executable, "-m", "omar_bulk", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=env if env is not None else environment(OMAR_CERT_PASSWORD=DEMO_PASSWORD),
        cwd=cwd,
        pass_fds=pass_fds,
        preexec_fn=limited if limit_memory is not None else None,
        timeout=DEADLINE,
        check=False,
    )


def fetch_args(server: ServerThread, pki: TestPKI, out: Path) -> list[str]:
    return [
        "fetch", *ONE_MONTH, "--out", str(out), "--no-progress", "--retry-wait", "0.01",
        "--base-url", server.base_url, "--cert", str(pki.client_p12), "--ca-bundle", str(pki.ca),
    ]  # fmt: skip


def make_node(path: Path, kind: int, major: int, minor: int) -> Path:
    """A device node of this test's own (root only: ``mknod`` needs it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a device node with mknod")
    os.mknod(path, 0o666 | kind, os.makedev(major, minor))
    return path


@pytest.fixture
def null_device(tmp_path: Path) -> Path:
    """A private /dev/null: character device 1:3."""
    return make_node(tmp_path / "null", stat.S_IFCHR, 1, 3)


@pytest.fixture
def zero_device(tmp_path: Path) -> Path:
    """A private /dev/zero: character device 1:5, endless NUL bytes."""
    return make_node(tmp_path / "zero", stat.S_IFCHR, 1, 5)


def same_node(path: Path, device: int) -> bool:
    info = path.lstat()
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == device


@contextlib.contextmanager
def fifo_reader(fifo: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``cat FIFO`` running for the block; killed at its end if still there."""
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        yield reader
    finally:
        if reader.poll() is None:
            reader.kill()
        reader.wait(timeout=DEADLINE)
        if reader.stdout:
            reader.stdout.close()


# -- output targets -----------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--report", "--metrics"])
def test_a_null_device_as_output_is_written_in_place_not_replaced(
    option: str, null_device: Path, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """``--report /dev/null`` and ``--metrics /dev/null`` discard the output: the node stays
    the same device, and nothing is left beside it."""
    device = null_device.lstat().st_rdev
    done = omar(*fetch_args(server, pki, tmp_path / "out"), option, str(null_device))
    assert done.returncode == 0, done.stderr
    assert same_node(null_device, device)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "out", "tmpdir"]


@pytest.mark.parametrize("option", ["--report", "--metrics"])
def test_a_fifo_with_a_reader_gets_the_output_and_stays_a_fifo(
    option: str, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """A FIFO's reader receives the whole report (or metrics); the metrics' FIFO is never
    opened for reading first (that would wait for a writer for ever)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with fifo_reader(fifo) as reader:
        done = omar(*fetch_args(server, pki, tmp_path / "out"), option, str(fifo))
        received, _ = reader.communicate(timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    if option == "--report":
        assert json.loads(received)["summary"]["downloaded"] == 1
    else:
        assert b'omar_bulk_fetch_items{out="' in received
        assert b"omar_bulk_fetch_exit_code" in received


@pytest.mark.parametrize("option", ["--report", "--metrics"])
def test_a_fifo_without_a_reader_is_refused_at_once_not_waited_on(
    option: str, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """No reader: the run ends (exit 4, as for any output it could not write), says why, and
    the FIFO is left a FIFO. Before, ``--metrics`` hung in ``open()`` until SIGKILL."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    started = time.monotonic()
    done = omar(*fetch_args(server, pki, tmp_path / "out"), option, str(fifo))
    assert time.monotonic() - started < DEADLINE
    assert done.returncode == 4, done.stderr
    assert b"is a FIFO with no reader: nothing was written" in done.stderr
    assert b"Traceback" not in done.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert (tmp_path / "out" / "meter" / "M1").is_dir()  # the run itself went through


def test_a_reader_that_stops_reading_ends_the_write_after_the_stall_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that holds the FIFO open but reads nothing cannot keep a run from ending."""
    monkeypatch.setattr(userfiles, "STALL_SECONDS", 0.2)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    try:
        started = time.monotonic()
        with (
            pytest.raises(LocalWriteError, match=r"accepted nothing for 0\.2 s"),
            userfiles.write_output(fifo) as handle,
        ):
            handle.write(b"x" * (4 << 20))  # far more than a pipe holds
        assert time.monotonic() - started < 10
    finally:
        os.close(held)


@pytest.mark.parametrize("option", ["--report", "--metrics"])
def test_a_socket_a_folder_or_a_block_device_is_refused_before_the_run(
    option: str, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """What cannot take a file's bytes is exit 2 before anything is sent; it is left as it
    was (the block device's major number has no driver: nothing could reach a disk)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    place = tmp_path / "s"
    listener.bind(str(place))
    try:
        targets = {place: stat.S_ISSOCK, tmp_path / "folder": stat.S_ISDIR}
        (tmp_path / "folder").mkdir()
        if os.geteuid() == 0:
            disk = make_node(tmp_path / "disk", stat.S_IFBLK, UNUSED_MAJOR, 0)
            targets[disk] = stat.S_ISBLK
        for target, kind in targets.items():
            done = omar(*fetch_args(server, pki, tmp_path / "out"), option, str(target))
            assert done.returncode == 2, (target, done.stderr)
            assert str(target).encode() in done.stderr
            assert kind(target.lstat().st_mode), target
            assert not (tmp_path / "out").exists()  # refused before the run
    finally:
        listener.close()


def test_report_dash_is_json_on_stdout_and_the_summary_on_stderr(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """``--report -``: stdout holds the JSON report and nothing else, for a pipe into jq."""
    done = omar(*fetch_args(server, pki, tmp_path / "out"), "--report", "-")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["summary"]["downloaded"] == 1
    assert [item["status"] for item in report["items"]] == ["downloaded"]
    assert b"1 planned" in done.stderr
    assert b"report: standard output" in done.stderr
    assert not (tmp_path / "out" / ".omar-bulk" / "last-run.json").exists()


def test_report_and_metrics_cannot_both_be_stdout(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    done = omar(*fetch_args(server, pki, tmp_path / "out"), "--report", "-", "--metrics", "-")
    assert done.returncode == 2
    assert b"both name standard output" in done.stderr


def test_metrics_dash_goes_to_stdout(server: ServerThread, pki: TestPKI, tmp_path: Path) -> None:
    """``--metrics -`` prints the exposition (to pipe it to a Pushgateway, say)."""
    done = omar(*fetch_args(server, pki, tmp_path / "out"), "--metrics", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"# HELP omar_bulk_fetch_")
    assert not (tmp_path / "-").exists()


def test_a_link_to_a_regular_report_keeps_the_link_and_replaces_its_file(tmp_path: Path) -> None:
    """``/dev/stdout`` redirected to a file is such a link: the link must survive."""
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with userfiles.write_output(link, mode=0o600) as handle:
        handle.write(b"new")
    assert link.is_symlink() and real.read_text() == "new"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json", "tmpdir"]


def test_an_own_file_is_renamed_over_whatever_stands_there(tmp_path: Path) -> None:
    """For omar-bulk's own files (``own``): a planted link or FIFO is replaced, never followed
    or written into; the file is whole and private."""
    outside = tmp_path / "outside"
    outside.write_text("keep")
    link = tmp_path / "mark"
    link.symlink_to(outside)
    fifo = tmp_path / "other-mark"
    os.mkfifo(fifo)
    for target in (link, fifo):
        with userfiles.write_output(target, mode=0o600, own=True) as handle:
            handle.write(b"/state\n")
        info = target.lstat()
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert target.read_bytes() == b"/state\n"
    assert outside.read_text() == "keep"


def test_only_a_regular_file_is_read_back(zero_device: Path, tmp_path: Path) -> None:
    """The metrics' last success time is read from a regular file only: a device (endless)
    or a FIFO (waits for a writer) is never read."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    regular = tmp_path / "m.prom"
    regular.write_bytes(b"x 1\n")
    assert userfiles.read_back(regular, 1 << 20) == b"x 1\n"
    assert userfiles.read_back(zero_device, 1 << 20) is None
    assert userfiles.read_back(fifo, 1 << 20) is None
    assert userfiles.read_back(tmp_path / "missing", 1 << 20) is None


# -- bounded reads ------------------------------------------------------------------------


def test_an_endless_certificate_is_refused_under_a_memory_limit(
    zero_device: Path, tmp_path: Path
) -> None:
    """``--cert /dev/zero`` with 512 MiB of address space: before, a MemoryError traceback;
    now exit 2 after reading a little over the 1 MiB accepted."""
    done = omar(
        "fetch", *ONE_MONTH, "--cert", str(zero_device), "--out", str(tmp_path / "out"),
        "--base-url", "https://127.0.0.1:9",
        limit_memory=512 << 20,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert b"larger than the 1 MiB accepted" in done.stderr
    assert b"Traceback" not in done.stderr and b"MemoryError" not in done.stderr


@pytest.mark.parametrize("option", ["--key", "--ca-bundle"])
def test_an_endless_key_or_ca_bundle_is_refused(
    option: str, zero_device: Path, pki: TestPKI, tmp_path: Path
) -> None:
    cert = pki.folder / "client-cert.pem" if option == "--key" else pki.client_p12
    done = omar(
        "fetch", *ONE_MONTH, "--cert", str(cert), option, str(zero_device),
        "--out", str(tmp_path / "out"), "--base-url", "https://127.0.0.1:9",
        limit_memory=512 << 20,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert b"larger than the 1 MiB accepted" in done.stderr


def test_a_large_regular_file_is_refused_by_its_size_without_reading(tmp_path: Path) -> None:
    """A sparse 2 GiB file: judged by its size, refused at once."""
    big = tmp_path / "big.p12"
    with big.open("wb") as handle:
        handle.truncate(2 << 30)
    with pytest.raises(UsageError, match="2048 MiB, larger than the 1 MiB accepted"):
        userfiles.read_whole(big, 1 << 20, UsageError)


def test_an_endless_manifest_stops_at_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO that never stops writing valid text is refused once the bound is passed; the
    writer is cut off there (it sees its reader gone)."""
    monkeypatch.setattr("omar_bulk.manifest.MAX_MANIFEST", 1 << 20)
    fifo = tmp_path / "endless.csv"
    os.mkfifo(fifo)
    written = [0]

    def write_for_ever() -> None:
        line = b"# a comment that goes on and on and on\n" * 100
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as sink:
            while written[0] < 64 << 20:  # a safety stop far beyond the bound
                sink.write(line)
                written[0] += len(line)

    writer = threading.Thread(target=write_for_ever, daemon=True)
    writer.start()
    with pytest.raises(ManifestError, match="larger than the 1 MiB accepted"):
        load_manifest(fifo)
    writer.join(timeout=DEADLINE)
    assert not writer.is_alive()
    assert written[0] < 4 << 20  # stopped near the bound, not at the safety stop


def test_an_endless_manifest_device_is_refused_at_its_first_bytes(zero_device: Path) -> None:
    done = omar("fetch", str(zero_device), "--dry-run", limit_memory=512 << 20)
    assert done.returncode == 2
    assert f"{zero_device}: not a text file (it holds NUL bytes)".encode() in done.stderr


# -- manifests from standard input, FIFOs and process substitution ------------------------

CSV = b"\xef\xbb\xbfkind,id,start,end\nmeter,M1,2024-01-01,2024-01-31\ngroup,G1,2024-02,2024-02\n"
TOML = b'[[pull]]\nmeters = ["M1"]\ngroups = ["G1"]\nstart = 2024-01-01\nend = 2024-01-31\n'


def test_fetch_dash_reads_a_csv_manifest_from_stdin(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """CSV (a byte order mark first, as Excel writes it) through a pipe: a real fetch."""
    out = tmp_path / "out"
    done = omar(
        "fetch", "-", "--out", str(out), "--no-progress", "--retry-wait", "0.01",
        "--base-url", server.base_url, "--cert", str(pki.client_p12), "--ca-bundle", str(pki.ca),
        stdin=CSV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "meter" / "M1" / "M1_20240101_20240131_PST.mdef").is_file()
    assert (out / "group" / "G1" / "G1_20240201_20240229_PST.mdef").is_file()


def test_fetch_dash_reads_a_toml_manifest_from_stdin(tmp_path: Path) -> None:
    done = omar("fetch", "-", "--dry-run", stdin=TOML)
    assert done.returncode == 0, done.stderr
    urls = done.stdout.decode().splitlines()
    assert len(urls) == 2
    assert "selectedMeters=M1" in urls[0] and "groupOrMeter=group" in urls[1]


@pytest.mark.parametrize(
    ("manifest", "where"),
    [
        (b"kind,id,start,end\nmeter,M1,2024-01-01,2024-01-31\nmeter,M1,2024-13-01,2024-12-31\n",
         b"<stdin>:3: start"),
        (b'[[pull]]\nmeters = ["M1"]\nstart = 2024-01-01\n', b"<stdin>:1: [[pull]] has no end"),
        (b"[[pull]\n", b"<stdin>:1: TOML syntax"),
    ],
)  # fmt: skip
def test_messages_about_stdin_name_it_with_its_line(manifest: bytes, where: bytes) -> None:
    done = omar("fetch", "-", "--dry-run", stdin=manifest)
    assert done.returncode == 2
    assert where in done.stderr, done.stderr


def test_fetch_dash_on_a_terminal_says_so_instead_of_waiting() -> None:
    """Nothing piped in: exit 2 at once, not a silent wait for a manifest typed by hand."""
    import pty

    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "omar_bulk", "fetch", "-", "--dry-run"],
            stdin=terminal, capture_output=True, env=environment(), timeout=DEADLINE, check=False,
        )  # fmt: skip
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 2
    assert b"<stdin>: standard input is a terminal" in done.stderr


def test_status_reads_its_manifest_from_stdin_too(tmp_path: Path) -> None:
    done = omar("status", str(tmp_path / "out"), "--manifest", "-", "--json", stdin=TOML)
    assert done.returncode == 1  # planned, never fetched
    totals = json.loads(done.stdout)["totals"]
    assert totals["missing"] == 2 and totals["downloaded"] == 0


def test_a_file_named_dash_is_not_taken_for_stdin(tmp_path: Path) -> None:
    """``fetch -`` reads stdin even where a file named ``-`` exists; ``./-`` reads the file."""
    (tmp_path / "-").write_bytes(b"kind,id,start,end\nmeter,FROM_FILE,2024-01-01,2024-01-31\n")
    piped = omar("fetch", "-", "--dry-run", stdin=TOML, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert b"FROM_FILE" not in piped.stdout and b"selectedMeters=M1" in piped.stdout
    named = omar("fetch", "./-", "--dry-run", cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert b"selectedMeters=FROM_FILE" in named.stdout


def test_a_manifest_from_a_fifo_is_read_once_whole(tmp_path: Path) -> None:
    """A FIFO can be read only once: the plan still makes every pass it needs."""
    fifo = tmp_path / "manifest"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", 'cat > "$1"', "sh", str(fifo)], stdin=subprocess.PIPE)
    try:
        assert writer.stdin is not None
        writer.stdin.write(CSV)
        writer.stdin.close()
        done = omar("fetch", str(fifo), "--dry-run")
    finally:
        writer.wait(timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2


def test_a_manifest_by_process_substitution() -> None:
    """``fetch <(generate)``: the shell hands over /dev/fd/N, a pipe."""
    bash = need_command("bash")
    script = '"$1" -m omar_bulk fetch <(printf %s "$2") --dry-run'
    done = subprocess.run(
        [bash, "-c", script, "bash", sys.executable, TOML.decode()],
        capture_output=True, env=environment(), timeout=DEADLINE, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2


# -- certificates through pipes, passwords from files -------------------------------------


def feed(data: bytes) -> int:
    """The read end of a pipe that holds ``data`` (written by a thread: it may not fit)."""
    read, write = os.pipe()

    def pour() -> None:
        with contextlib.suppress(BrokenPipeError), os.fdopen(write, "wb") as sink:
            sink.write(data)

    threading.Thread(target=pour, daemon=True).start()
    return read


def test_a_certificate_and_ca_bundle_through_pipes(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """``--cert /dev/fd/N --ca-bundle /dev/fd/M``: each read once, the fetch goes through."""
    cert, ca = feed(pki.client_p12.read_bytes()), feed(pki.ca.read_bytes())
    try:
        done = omar(
            "fetch", *ONE_MONTH, "--out", str(tmp_path / "out"), "--no-progress",
            "--base-url", server.base_url,
            "--cert", f"/dev/fd/{cert}", "--ca-bundle", f"/dev/fd/{ca}",
            pass_fds=(cert, ca),
        )  # fmt: skip
    finally:
        os.close(cert)
        os.close(ca)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "meter" / "M1" / "M1_20240101_20240131_PST.mdef").is_file()


def password_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "cert-password"
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("content", [b"%s\n", b"%s", b"%s\r\n", b"%s\nsecond line\n"])
def test_the_password_comes_from_the_first_line_of_a_password_file(
    content: bytes, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, content % DEMO_PASSWORD.encode())
    done = omar(
        *fetch_args(server, pki, tmp_path / "out"),
        env=environment(OMAR_CERT_PASSWORD_FILE=str(secret)),
    )
    assert done.returncode == 0, done.stderr
    assert b"warning" not in done.stderr
    assert DEMO_PASSWORD.encode() not in done.stdout + done.stderr


def test_a_password_file_others_can_read_is_warned_about(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, DEMO_PASSWORD.encode() + b"\n", 0o644)
    done = omar(
        *fetch_args(server, pki, tmp_path / "out"),
        env=environment(OMAR_CERT_PASSWORD_FILE=str(secret)),
    )
    assert done.returncode == 0, done.stderr
    assert b"is 0644: its group and every user can read it; chmod 600" in done.stderr
    assert DEMO_PASSWORD.encode() not in done.stdout + done.stderr


def test_a_wrong_password_in_the_file_is_exit_2_without_echoing_it(
    pki: TestPKI, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, b"not-the-password-1234\n")
    done = omar(
        "fetch", *ONE_MONTH, "--out", str(tmp_path / "out"), "--cert", str(pki.client_p12),
        "--base-url", "https://127.0.0.1:9",
        env=environment(OMAR_CERT_PASSWORD_FILE=str(secret)),
    )  # fmt: skip
    assert done.returncode == 2
    assert b"wrong password" in done.stderr
    assert b"not-the-password-1234" not in done.stdout + done.stderr


@pytest.mark.parametrize("command", ["fetch", "check"])
def test_both_password_variables_or_a_missing_file_are_exit_2(
    command: str, pki: TestPKI, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, DEMO_PASSWORD.encode())
    args = [command, "--cert", str(pki.client_p12), "--base-url", "https://127.0.0.1:9"]
    if command == "fetch":
        args += [*ONE_MONTH, "--out", str(tmp_path / "out")]
    both = omar(
        *args,
        env=environment(OMAR_CERT_PASSWORD=DEMO_PASSWORD, OMAR_CERT_PASSWORD_FILE=str(secret)),
    )
    assert both.returncode == 2
    assert b"both OMAR_CERT_PASSWORD and OMAR_CERT_PASSWORD_FILE are set" in both.stderr
    missing = omar(*args, env=environment(OMAR_CERT_PASSWORD_FILE=str(tmp_path / "nope")))
    assert missing.returncode == 2
    assert b"OMAR_CERT_PASSWORD_FILE" in missing.stderr and b"No such file" in missing.stderr


def test_check_takes_the_password_file_and_checks_its_permissions(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    secret = password_file(tmp_path, DEMO_PASSWORD.encode() + b"\n", 0o640)
    done = omar(
        "check", "--base-url", server.base_url, "--cert", str(pki.client_p12),
        "--ca-bundle", str(pki.ca), "--json",
        env=environment(OMAR_CERT_PASSWORD_FILE=str(secret)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    checks = json.loads(done.stdout)["checks"]
    verdicts = {(c["name"], c["details"].get("file")): c["verdict"] for c in checks}
    assert verdicts[("certificate", str(pki.client_p12))] == "ok"
    assert verdicts[("permissions", str(secret))] == "warn"
    assert DEMO_PASSWORD.encode() not in done.stdout + done.stderr


# -- links, the process's own streams -------------------------------------------------------


@pytest.mark.parametrize("option", ["--report", "--metrics"])
def test_a_link_another_user_could_have_planted_is_not_followed(
    option: str, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """As root, a link in a folder of another user is refused (exit 2); its target stays."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the link belongs to another user")
    nobody = 65534
    shared = tmp_path / "textfile"
    shared.mkdir()
    os.chown(shared, nobody, nobody)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    victim = private / "important.conf"
    victim.write_bytes(b"root's own file\n")
    planted = shared / "omar.out"
    planted.symlink_to(victim)
    os.lchown(planted, nobody, nobody)
    done = omar(*fetch_args(server, pki, tmp_path / "out"), option, str(planted))
    assert done.returncode == 2, done.stderr
    assert b"another user" in done.stderr
    assert victim.read_bytes() == b"root's own file\n"
    assert not (tmp_path / "out").exists()  # refused before anything was sent


def test_a_link_in_a_folder_others_can_write_is_not_followed(tmp_path: Path) -> None:
    """A folder anyone can write (not sticky): whoever could have swapped the link is unknown."""
    open_to_all = tmp_path / "shared"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    target = tmp_path / "mine.json"
    target.write_bytes(b"kept\n")
    (open_to_all / "report.json").symlink_to(target)
    with pytest.raises(UsageError, match="another user"):
        userfiles.check_output(open_to_all / "report.json", "--report")
    with pytest.raises(LocalWriteError), userfiles.write_output(open_to_all / "report.json") as out:
        out.write(b"new\n")
    assert target.read_bytes() == b"kept\n"


def test_in_a_sticky_folder_the_links_owner_decides(tmp_path: Path) -> None:
    """A sticky folder anyone may write (as /tmp): only the link's owner could have made it,
    so a link of another user is refused and one of our own is followed, both ways."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the link belongs to another user")
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    target = tmp_path / "mine.json"
    target.write_bytes(b"kept\n")
    theirs = sticky / "theirs.json"
    theirs.symlink_to(target)
    os.lchown(theirs, 65534, 65534)
    with pytest.raises(UsageError, match="another user"):
        userfiles.check_output(theirs, "--report")
    assert target.read_bytes() == b"kept\n"
    ours = sticky / "ours.json"
    ours.symlink_to(target)
    userfiles.check_output(ours, "--report")  # our own link: followed
    with userfiles.write_output(ours) as out:
        out.write(b"new\n")
    assert target.read_bytes() == b"new\n" and ours.is_symlink()


def test_a_folder_link_on_the_way_is_checked_like_a_file_link(tmp_path: Path) -> None:
    """A link to a folder, planted in a folder others can write, is not followed either."""
    open_to_all = tmp_path / "shared"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (open_to_all / "sub").symlink_to(elsewhere)
    with pytest.raises(UsageError, match="the link sub"):
        userfiles.check_output(open_to_all / "sub" / "report.json", "--report")


def test_a_report_link_to_a_missing_file_creates_that_file_and_keeps_the_link(
    tmp_path: Path,
) -> None:
    """A link of the user's own to a file not there yet: the file it names is written."""
    link = tmp_path / "report.json"
    link.symlink_to("made/later.json")
    (tmp_path / "made").mkdir()
    with userfiles.write_output(link) as out:
        out.write(b"{}\n")
    assert link.is_symlink()
    assert (tmp_path / "made" / "later.json").read_bytes() == b"{}\n"


def test_report_to_dev_stdout_appends_to_the_file_stdout_appends_to(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """``--report /dev/stdout >> run.log 2>&1`` appends to the log, as ``-`` does."""
    log = tmp_path / "run.log"
    log.write_bytes(b"yesterday's run\n")
    log.chmod(0o644)
    with log.open("ab") as appended:
        done = subprocess.run(
            [sys.executable, "-m", "omar_bulk", *fetch_args(server, pki, tmp_path / "out"),
             "--report", "/dev/stdout"],
            stdout=appended, stderr=appended, stdin=subprocess.DEVNULL,
            env=environment(OMAR_CERT_PASSWORD=DEMO_PASSWORD), timeout=DEADLINE, check=False,
        )  # fmt: skip
    assert done.returncode == 0
    text = log.read_bytes()
    assert text.startswith(b"yesterday's run\n"), text[:200]
    assert b'"downloaded": 1' in text and b"1 planned" in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o644


def test_report_to_proc_self_fd_writes_through_that_descriptor(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """``/proc/self/fd/N`` is the descriptor N already open; one not open is exit 2."""
    log = tmp_path / "fd.log"
    log.write_bytes(b"before\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        args = fetch_args(server, pki, tmp_path / "out")
        done = omar(*args, "--report", f"/proc/self/fd/{fd}", pass_fds=(fd,))
        assert done.returncode == 0, done.stderr
    finally:
        os.close(fd)
    text = log.read_bytes()
    assert text.startswith(b"before\n{") and b'"downloaded": 1' in text
    closed = omar(*fetch_args(server, pki, tmp_path / "out2"), "--report", "/dev/fd/9")
    assert closed.returncode == 2
    assert b"descriptor 9, which this process does not have open" in closed.stderr


def test_escape_sequences_in_an_output_path_never_reach_the_terminal(tmp_path: Path) -> None:
    """The refusal names the path with its control characters escaped."""
    folder = tmp_path / "a\x1b[31mred"
    folder.mkdir()
    with pytest.raises(UsageError) as refused:
        userfiles.check_output(folder, "--report")
    assert "\x1b" not in str(refused.value)


# -- FIFOs and devices ----------------------------------------------------------------------


def test_a_fifo_without_a_reader_is_named_in_the_advice(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """The advice names the FIFO (``cat PATH &``), not a literal ``{path}``."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done = omar(*fetch_args(server, pki, tmp_path / "out"), "--report", str(fifo))
    assert done.returncode == 4, done.stderr
    assert b"{path}" not in done.stderr, done.stderr
    assert f"cat {fifo} &".encode() in done.stderr


def test_a_stalled_reader_holds_the_write_one_stall_limit_not_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buffer's close does not wait a second ``STALL_SECONDS`` after a stall."""
    monkeypatch.setattr(userfiles, "STALL_SECONDS", 1.0)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    try:
        started = time.monotonic()
        with pytest.raises(LocalWriteError), userfiles.write_output(fifo) as handle:
            for _ in range(40_000):  # item by item, as the report is written
                handle.write(b"x" * 100)
        assert time.monotonic() - started < 1.8
    finally:
        os.close(held)


def test_one_null_device_may_take_both_the_report_and_the_metrics(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """``--report N --metrics N`` with N a null device discards both (exit 0), N stays a device."""
    null = make_node(tmp_path / "null", stat.S_IFCHR, 1, 3)
    done = omar(
        *fetch_args(server, pki, tmp_path / "out"), "--report", str(null), "--metrics", str(null)
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(null.lstat().st_mode)


# -- standard input, manifests, password files ----------------------------------------------


def test_fetch_dash_with_stdin_closed_says_it_is_closed(tmp_path: Path) -> None:
    """``fetch - <&-``: exit 2 naming a closed standard input, not a terminal."""
    done = subprocess.run(
        [sys.executable, "-m", "omar_bulk", "fetch", "-", "--out", str(tmp_path / "o"),
         "--dry-run"],
        capture_output=True, env=environment(OMAR_CERT_PASSWORD=DEMO_PASSWORD),
        preexec_fn=lambda: os.close(0), timeout=DEADLINE, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr
    assert b"standard input is closed" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "manifest",
    [
        b"# the north meters\nkind,id,start,end\nmeter,M1,2024-01-01,2024-01-31\n",
        b"id,kind,start,end\nM1,meter,2024-01-01,2024-01-31\n",
    ],
    ids=["comment-first", "reordered-header"],
)
def test_a_csv_manifest_on_stdin_is_told_by_its_header_line(
    tmp_path: Path, manifest: bytes
) -> None:
    """A CSV manifest on stdin may open with ``#`` comments and name its columns in any order."""
    done = omar("fetch", "-", "--out", str(tmp_path / "o"), "--dry-run", stdin=manifest)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(b"https://") == 1


def test_a_password_file_readable_through_one_acl_user_is_not_warned_about(
    tmp_path: Path,
) -> None:
    """A systemd credential (0400, an ACL entry for one user: shown 0440) gets no chmod advice."""
    from omar_bulk.tls import password_file_warning

    secret = tmp_path / "cert-password"
    secret.write_text("omar-demo\n")
    secret.chmod(0o400)
    every = 0xFFFFFFFF
    # owner r, user 4242 r, group none, mask r, other none
    entries = [(0x01, 4, every), (0x02, 4, 4242), (0x04, 0, every), (0x10, 4, every)]
    entries.append((0x20, 0, every))
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(secret, "system.posix_acl_access", acl)
    except OSError as exc:
        pytest.skip(f"this file system takes no POSIX ACL: {exc}")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o440  # what stat shows
    assert password_file_warning(secret) is None
    group_too = [(0x01, 4, every), (0x04, 4, every), (0x10, 4, every), (0x20, 0, every)]
    os.setxattr(
        secret,
        "system.posix_acl_access",
        struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in group_too),
    )
    assert "its group can read it" in (password_file_warning(secret) or "")


def test_a_password_file_that_is_not_a_file_gets_no_chmod_advice(tmp_path: Path) -> None:
    """A folder (0755) or a FIFO as the password file: reading it says what is wrong."""
    from omar_bulk.tls import password_file_warning

    folder = tmp_path / "folder"
    folder.mkdir(mode=0o755)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o644)
    assert password_file_warning(folder) is None
    assert password_file_warning(fifo) is None


def test_fetch_dash_with_a_certificate_from_stdin_too_is_refused(tmp_path: Path) -> None:
    """``fetch - --cert -``: standard input carries the manifest, so exit 2 naming --cert."""
    manifest = b"kind,id,start,end\nmeter,M1,2024-01-01,2024-01-31\n"
    done = omar("fetch", "-", "--cert", "-", "--out", str(tmp_path / "o"), stdin=manifest)
    assert done.returncode == 2, done.stderr
    assert b"--cert cannot be - too" in done.stderr


def test_a_report_whose_folder_takes_no_new_file_is_refused_before_the_run(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """An immutable folder (even root cannot create there): exit 2 before anything is sent."""
    chattr = shutil.which("chattr")
    folder = tmp_path / "frozen"
    folder.mkdir()
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], check=False).returncode:
        pytest.skip("chattr +i is not available here (needs root and ext2/3/4, xfs or btrfs)")
    try:
        done = omar(*fetch_args(server, pki, tmp_path / "out"), "--report", str(folder / "r.json"))
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)
    assert done.returncode == 2, done.stderr
    assert b"does not let omar-bulk create a file there" in done.stderr
    assert not (tmp_path / "out").exists()
