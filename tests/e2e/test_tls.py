"""Client certificates in every accepted form, their failures, and fatal TLS errors."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from omar_bulk.errors import CertificateError
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import serve_in_thread
from omar_bulk.tls import create_ssl_context, load_identity

from ..conftest import Cli, data_files, need_command

ONE = ["--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-02"]


@pytest.mark.parametrize(
    ("cert", "key", "password"),
    [
        ("client.p12", None, DEMO_PASSWORD),
        ("client-nopass.p12", None, None),
        ("client.pem", None, None),
        ("client-cert.pem", "client-key.pem", None),
        ("client-cert.pem", "client-key-encrypted.pem", DEMO_PASSWORD),
    ],
)
def test_every_certificate_form_downloads(
    cli: Cli, pki: TestPKI, cert: str, key: str | None, password: str | None
) -> None:
    args = ["fetch", *ONE, "--cert", str(pki.folder / cert)]
    if key:
        args += ["--key", str(pki.folder / key)]
    env = {"OMAR_CERT_PASSWORD": password} if password else {"OMAR_CERT_PASSWORD": None}
    outcome = cli(*args, env=env)  # type: ignore[arg-type]
    assert outcome.exit_code == 0, outcome.stderr
    assert len(data_files(cli.out)) == 1


def test_server_and_certificate_options_come_from_the_environment(cli: Cli, pki: TestPKI) -> None:
    assert cli.server is not None
    env = {
        "OMAR_BASE_URL": cli.server.base_url,
        "OMAR_CERT": str(pki.folder / "client-cert.pem"),
        "OMAR_KEY": str(pki.folder / "client-key.pem"),
        "OMAR_CA_BUNDLE": str(pki.ca),
    }
    outcome = cli("fetch", *ONE, "--out", str(cli.out), env=env, auth=False)
    assert outcome.exit_code == 0, outcome.stderr
    assert len(data_files(cli.out)) == 1


def test_a_wrong_password_is_exit_2_and_never_echoed(offline_cli: Cli, pki: TestPKI) -> None:
    secret = "s3cr3t-Wr0ng-pa55"
    outcome = offline_cli(
        "fetch", *ONE, "--base-url", "https://127.0.0.1:9/", env={"OMAR_CERT_PASSWORD": secret}
    )
    assert outcome.exit_code == 2
    assert "wrong password" in outcome.stderr
    assert secret not in outcome.stderr + outcome.stdout


def test_an_encrypted_key_without_a_password_asks_for_one(offline_cli: Cli, pki: TestPKI) -> None:
    outcome = offline_cli(
        "fetch",
        *ONE,
        "--base-url",
        "https://127.0.0.1:9/",
        "--cert",
        str(pki.folder / "client-cert.pem"),
        "--key",
        str(pki.folder / "client-key-encrypted.pem"),
        env={"OMAR_CERT_PASSWORD": None},  # type: ignore[dict-item]
    )
    assert outcome.exit_code == 2
    assert "OMAR_CERT_PASSWORD" in outcome.stderr


@pytest.mark.parametrize(
    ("validity", "message"),
    [
        ({"not_after": datetime.now(UTC) - timedelta(days=1)}, "expired"),
        ({"not_before": datetime.now(UTC) + timedelta(days=3)}, "not valid until"),
    ],
)
def test_a_certificate_outside_its_validity_is_exit_2_before_any_request(
    cli: Cli, pki: TestPKI, validity: dict[str, datetime], message: str
) -> None:
    if "not_after" in validity:
        validity["not_before"] = validity["not_after"] - timedelta(days=30)
    stem = "expired" if "not_after" in validity else "future"
    cert = pki.client(stem, **validity)
    outcome = cli("fetch", *ONE, "--cert", str(cert))
    assert outcome.exit_code == 2
    assert message in outcome.stderr
    assert cli.server is not None and cli.server.state.log == []


def test_a_certificate_expiring_soon_warns_and_runs(cli: Cli, pki: TestPKI) -> None:
    cert = pki.client("soon", not_after=datetime.now(UTC) + timedelta(days=5))
    outcome = cli("fetch", *ONE, "--cert", str(cert))
    assert outcome.exit_code == 0
    assert "expires in 4 day(s)" in outcome.stderr or "expires in 5 day(s)" in outcome.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, I am not a certificate\n", "not a certificate"),
        (bytes(range(256)), "not a certificate"),
        (b"\x30\x82\x01\x00" + b"\x00" * 300, "wrong password, or not a PKCS#12"),
        (b"-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n", "not a PEM"),
    ],
)
def test_a_file_that_is_not_a_certificate_is_exit_2(
    offline_cli: Cli, tmp_path: Path, content: bytes, message: str
) -> None:
    bogus = tmp_path / "bogus.p12"
    bogus.write_bytes(content)
    outcome = offline_cli("fetch", *ONE, "--base-url", "https://127.0.0.1:9/", "--cert", str(bogus))
    assert outcome.exit_code == 2
    assert message in outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_a_missing_certificate_file_is_exit_2(offline_cli: Cli, tmp_path: Path) -> None:
    outcome = offline_cli(
        "fetch", *ONE, "--base-url", "https://127.0.0.1:9/", "--cert", str(tmp_path / "nope.p12")
    )
    assert outcome.exit_code == 2
    assert "no such file" in outcome.stderr


def test_a_key_that_belongs_to_another_certificate_is_refused(pki: TestPKI) -> None:
    other = pki.client("other")
    with pytest.raises(CertificateError, match="does not belong"):
        load_identity(pki.folder / "client-cert.pem", other.with_name("other-key.pem"))


def test_the_key_never_reaches_the_disk_unencrypted(
    pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Path, bytes]] = []
    original = ssl.SSLContext.load_cert_chain

    def spy(
        self: ssl.SSLContext, certfile: str, keyfile: str | None = None, password: object = None
    ) -> None:
        seen.append((Path(certfile), Path(certfile).read_bytes()))
        original(self, certfile, keyfile, password)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    identity = load_identity(pki.client_p12, password=lambda _w: DEMO_PASSWORD)
    create_ssl_context(identity)
    ((path, content),) = seen
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in content
    assert b"-----BEGIN PRIVATE KEY-----" not in content
    assert not path.exists()  # removed as soon as OpenSSL has read it


@pytest.fixture
def stranger(tmp_path: Path) -> TestPKI:
    """A client identity from a CA the stand-in does not trust."""
    return TestPKI.create(tmp_path / "stranger")


@pytest.mark.parametrize("max_tls", [None, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_a_server_that_drops_our_certificate_silently_aborts_with_exit_3(
    pki: TestPKI, stranger: TestPKI, tmp_path: Path, max_tls: ssl.TLSVersion | None
) -> None:
    """asyncio servers close the connection without a TLS alert; every login attempt fails so."""
    with serve_in_thread(pki, max_tls=max_tls) as server:
        run = Cli(pki, tmp_path / "out", server)
        outcome = run(
            "fetch",
            "--meter",
            "M1",
            "--start",
            "2024-01-01",
            "--end",
            "2024-12-31",
            "--cert",
            str(stranger.client_pem),
            "--retries",
            "2",
        )
        assert server.state.log == []  # not one HTTP request got through
    assert outcome.exit_code == 3
    assert "refuse a client certificate" in outcome.stderr
    assert "1 planned" not in outcome.stderr and "12 not attempted" in outcome.stderr


@pytest.fixture
def openssl_server(pki: TestPKI, request: pytest.FixtureRequest) -> Iterator[str]:
    """A real OpenSSL server that refuses unknown client certificates with a TLS alert."""
    binary = need_command("openssl")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [
        binary,
        "s_server",
        "-accept",
        f"127.0.0.1:{port}",
        "-cert",
        str(pki.server),
        "-CAfile",
        str(pki.ca),
        "-Verify",
        "1",
        "-verify_return_error",
        "-www",
        "-quiet",
        *request.param,
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"https://127.0.0.1:{port}/"
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.parametrize(
    "openssl_server", [[], ["-no_tls1_3"]], ids=["tls1.3", "tls1.2"], indirect=True
)
def test_a_tls_alert_refusing_our_certificate_aborts_at_once_with_exit_3(
    offline_cli: Cli, pki: TestPKI, stranger: TestPKI, openssl_server: str
) -> None:
    outcome = offline_cli(
        "fetch",
        *ONE,
        "--base-url",
        openssl_server,
        "--cert",
        str(stranger.client_pem),
        "--retries",
        "50",
    )
    assert outcome.exit_code == 3
    assert "does not know the issuer of our client certificate (TLS alert" in outcome.stderr
    assert "retrying" not in outcome.stderr  # fatal at the first alert, never retried


@pytest.mark.parametrize("openssl_server", [[]], indirect=True)
def test_a_certificate_exported_without_its_issuer_is_named_an_incomplete_chain(
    offline_cli: Cli, pki: TestPKI, openssl_server: str
) -> None:
    """The server trusts only the root: a leaf sent alone gets "unknown CA", and the user is
    told the chain is incomplete, which issuer is missing and how to export it whole."""
    alone = pki.client("alone", with_issuer=False)
    outcome = offline_cli("fetch", *ONE, "--base-url", openssl_server, "--cert", str(alone))
    assert outcome.exit_code == 3
    assert "chain is incomplete" in outcome.stderr
    assert "holds no certificate of CN=omar-bulk stand-in issuing CA" in outcome.stderr
    assert "include all certificates in the certification path" in outcome.stderr
    assert "does not know the issuer of our client certificate" in outcome.stderr


@pytest.mark.parametrize("openssl_server", [[]], indirect=True)
def test_the_same_certificate_with_its_issuer_passes_the_tls_handshake(
    offline_cli: Cli, pki: TestPKI, openssl_server: str
) -> None:
    """The other direction: the full chain is accepted, and nothing speaks of a chain."""
    whole = pki.client("whole")
    outcome = offline_cli("fetch", *ONE, "--base-url", openssl_server, "--cert", str(whole))
    assert "TLS alert" not in outcome.stderr, outcome.stderr
    assert "chain is incomplete" not in outcome.stderr


@pytest.mark.parametrize(
    "openssl_server", [["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]], indirect=True
)
def test_a_server_offering_only_tls_1_1_is_named_as_such_not_as_a_refused_certificate(
    offline_cli: Cli, pki: TestPKI, openssl_server: str
) -> None:
    outcome = offline_cli("fetch", *ONE, "--base-url", openssl_server)
    assert outcome.exit_code == 3
    assert "offers no TLS version omar-bulk accepts (1.2 or newer)" in outcome.stderr
    assert "client certificate" not in outcome.stderr.split("run aborted:")[1].split("\n")[0]


def test_the_chain_gap_is_the_leafs_issuer_only() -> None:
    """A chain may stop below the root (the server holds the root); only the leaf's own
    issuer is required, and a self-issued certificate needs none."""
    from omar_bulk.standin.certs import Authority

    root = Authority.create("root")
    issuing = root.subordinate("issuing")
    leaf, key = issuing.issue("leaf")

    def identity(*chain: Any) -> Any:
        from omar_bulk.tls import ClientIdentity

        return ClientIdentity(
            "s", leaf.not_valid_before_utc, leaf.not_valid_after_utc, "f", chain=chain, key=key
        )

    assert identity(leaf).missing_issuer == issuing.cert.subject.rfc4514_string()
    assert identity(leaf, root.cert).missing_issuer is not None  # the root is not the issuer
    assert identity(leaf, issuing.cert).missing_issuer is None
    assert identity(leaf, issuing.cert, root.cert).missing_issuer is None
    assert identity(root.cert).missing_issuer is None
    assert identity(leaf).chain_lines()[-1].startswith("issuer not included: ")
    assert identity(leaf, issuing.cert).chain_lines() == [
        leaf.subject.rfc4514_string(),
        issuing.cert.subject.rfc4514_string(),
    ]


def test_an_unverifiable_server_aborts_with_exit_3_and_a_hint(cli: Cli, tmp_path: Path) -> None:
    other_ca = TestPKI.create(tmp_path / "other").ca
    outcome = cli("fetch", *ONE, "--ca-bundle", str(other_ca))
    assert outcome.exit_code == 3
    assert "does not verify" in outcome.stderr and "--ca-bundle" in outcome.stderr


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(104, "Connection reset by peer"),
        BrokenPipeError(32, "Broken pipe"),
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)"),
    ],
    ids=["reset", "broken pipe", "tls eof"],
)
def test_every_form_of_a_dropped_connection_is_classified_as_dropped(error: OSError) -> None:
    """The silent-refusal diagnosis counts on it, however aiohttp wraps the error."""
    import aiohttp

    from omar_bulk.errors import ConnectionDropped
    from omar_bulk.session import classify_client_error

    wrapped = aiohttp.ClientOSError(*error.args)
    wrapped.__cause__ = error
    for exc in (error, wrapped):
        assert isinstance(classify_client_error(exc, 5), ConnectionDropped), exc


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux-only")
def test_no_key_file_is_created_in_tmpdir_during_a_run_on_linux(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identity reaches OpenSSL through an anonymous in-memory file, not a temporary one."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    made: list[str] = []
    original = tempfile.mkstemp

    def spy(*args: Any, **kwargs: Any) -> Any:
        fd, name = original(*args, **kwargs)
        made.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    outcome = cli("fetch", *ONE)
    assert outcome.exit_code == 0, outcome.stderr
    assert [n for n in made if Path(n).name.startswith("omar-bulk-")] == []
    assert list(scratch.glob("omar-bulk-*.pem")) == []


def test_the_memory_file_holds_only_the_encrypted_key_and_vanishes(
    pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "memfd_create"):
        pytest.skip("memfd_create is Linux-only")
    paths: list[str] = []
    original = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: str, *args: Any, **kwargs: Any) -> None:
        paths.append(certfile)
        original(self, certfile, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    create_ssl_context(load_identity(pki.client_pem))
    (path,) = paths
    assert path.startswith("/proc/self/fd/")
    assert not os.path.exists(path)  # the descriptor is closed once OpenSSL has read it


PROBE = """
import ctypes, resource, sys
from omar_bulk.cli import app
try:
    app(sys.argv[1:], prog_name="omar-bulk")
except SystemExit as end:
    code = end.code
dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
print(code, *resource.getrlimit(resource.RLIMIT_CORE), dumpable)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
@pytest.mark.parametrize("command", ["fetch", "check"])
def test_commands_that_load_the_key_forbid_core_dumps(
    pki: TestPKI, tmp_path: Path, command: str
) -> None:
    """A crash while the decrypted key is in memory must not write it into a core file."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{probe.getsockname()[1]}/"
    args = [command, "--base-url", closed, "--cert", str(pki.client_p12)]
    if command == "fetch":
        args += [*ONE, "--out", str(tmp_path / "out"), "--retries", "0", "--no-progress"]
    env = {**os.environ, "OMAR_CERT_PASSWORD": DEMO_PASSWORD}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    code, soft, hard, dumpable = done.stdout.split()[-4:]
    assert code == "1", done.stdout + done.stderr  # unreachable: the key was loaded first
    assert (soft, hard, dumpable) == ("0", "0", "0")


@pytest.mark.parametrize(
    "openssl_server", [[], ["-no_tls1_3"]], ids=["tls1.3", "tls1.2"], indirect=True
)
def test_check_reports_a_tls_alert_refusing_our_certificate_as_exit_3(
    offline_cli: Cli, pki: TestPKI, stranger: TestPKI, openssl_server: str
) -> None:
    outcome = offline_cli(
        "check",
        "--base-url",
        openssl_server,
        "--cert",
        str(stranger.client_pem),
        "--ca-bundle",
        str(pki.ca),
    )
    assert outcome.exit_code == 3, outcome.stdout
    assert "✗ our certificate" in outcome.stdout
    assert "TLS alert" in outcome.stdout


def test_the_context_never_offers_less_than_tls_1_2() -> None:
    """TLS 1.0 and 1.1 are refused whatever the system's OpenSSL would still allow: the floor
    is set here, not left to the platform's defaults."""
    import ssl

    from omar_bulk.tls import create_ssl_context

    context = create_ssl_context(None)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
