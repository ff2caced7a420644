"""``omar-bulk check``: every verdict against the stand-in, exit codes as ``fetch`` has them."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from omar_bulk.check import FAIL, OK, SKIP, WARN, _clock, _permissions, run_check
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import ServerThread, serve_in_thread

from ..conftest import Cli, Outcome
from .test_tls import openssl_server  # noqa: F401 (a fixture)


def check(cli: Cli, server_url: str, cert: Path, *more: str, **env: str | None) -> Outcome:
    args = ["check", "--base-url", server_url, "--cert", str(cert), *more]
    if "--ca-bundle" not in more:
        args += ["--ca-bundle", str(cli.pki.ca)]
    return cli(*args, env=env or None)  # type: ignore[arg-type]


def verdicts(outcome: Outcome) -> dict[str, str]:
    """Step name -> mark, from the human output."""
    lines = [line for line in outcome.stdout.splitlines() if line[:2] in ("✓ ", "! ", "✗ ", "- ")]
    marks = {}
    for line in lines:
        mark, rest = line[0], line[2:]
        name = rest.split("  ", 1)[0].strip()
        marks[name] = mark
    return marks


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def stranger(tmp_path: Path) -> TestPKI:
    """A client identity from a CA the stand-in does not trust."""
    return TestPKI.create(tmp_path / "stranger")


def test_a_good_certificate_and_server_pass_every_step(
    cli: Cli, pki: TestPKI, server: ServerThread
) -> None:
    """Eleven steps, all ticked; the session cookie is named and its value never shown."""
    outcome = check(cli, server.base_url, pki.client_p12)
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    assert set(verdicts(outcome).values()) == {"✓"}
    assert list(verdicts(outcome)) == [
        "certificate",
        "chain",
        "validity",
        "private key",
        "permissions",
        "TCP",
        "TLS",
        "server certificate",
        "our certificate",
        "session",
        "clock",
    ]
    assert "omar-bulk demo client <- omar-bulk stand-in issuing CA" in outcome.stdout
    assert "cookie JSESSIONID" in outcome.stdout
    assert "TLSv1.3" in outcome.stdout
    assert outcome.stdout.rstrip().endswith("ready")
    tokens = list(server.state.sessions)
    assert len(tokens) == 1 and server.state.downloads() == []  # one login, not one download
    assert tokens[0] not in outcome.stdout + outcome.stderr


def test_json_output_carries_the_same_verdicts_for_scripts(
    cli: Cli, pki: TestPKI, server: ServerThread
) -> None:
    outcome = check(cli, server.base_url, pki.client_pem, "--json")
    assert outcome.exit_code == 0
    data = json.loads(outcome.stdout)
    assert data["ok"] is True and data["exit_code"] == 0
    by_name = {c["name"]: c for c in data["checks"]}
    assert by_name["certificate"]["details"]["common_name"] == "omar-bulk demo client"
    issuer = by_name["certificate"]["details"]["issuer"]
    assert issuer.startswith("CN=omar-bulk stand-in issuing CA")
    assert by_name["validity"]["details"]["days_left"] in (363, 364)
    assert by_name["session"]["details"]["cookies"] == ["JSESSIONID"]
    assert by_name["TLS"]["details"]["version"] == "TLSv1.3"
    assert "IP Address:127.0.0.1" in by_name["server certificate"]["details"]["subject_alt_names"]


def test_a_certificate_expiring_within_30_days_warns_and_exits_0(
    cli: Cli, pki: TestPKI, server: ServerThread
) -> None:
    cert = pki.client("check-soon", not_after=datetime.now(UTC) + timedelta(days=20))
    outcome = check(cli, server.base_url, cert)
    assert outcome.exit_code == 0
    assert verdicts(outcome)["validity"] == "!"
    assert "expires in 19 day(s)" in outcome.stdout or "expires in 20 day(s)" in outcome.stdout
    assert "ready, with 1 warning(s)" in outcome.stdout


def test_a_certificate_without_its_issuer_shows_the_gap_in_the_chain(
    cli: Cli, pki: TestPKI, server: ServerThread
) -> None:
    """check shows the chain a run sends; a missing issuer is named with the way to export
    it (the stand-in accepts the leaf anyway, as a server holding the issuing CA would)."""
    cert = pki.client("check-alone", with_issuer=False)
    outcome = check(cli, server.base_url, cert, "--json")
    steps = {c["name"]: c for c in json.loads(outcome.stdout)["checks"]}
    assert steps["chain"]["verdict"] == WARN
    assert steps["chain"]["details"]["missing_issuer"].startswith(
        "CN=omar-bulk stand-in issuing CA"
    )
    assert "issuer not included: CN=omar-bulk stand-in issuing CA" in steps["chain"]["reason"]
    assert "include all certificates" in steps["chain"]["reason"]
    whole = check(cli, server.base_url, pki.client("check-whole"), "--json")
    chain = {c["name"]: c for c in json.loads(whole.stdout)["checks"]}["chain"]
    assert chain["verdict"] == OK and "missing_issuer" not in chain["details"]
    assert len(chain["details"]["sent"]) == 2


def test_fetch_warns_on_the_same_30_day_rule(cli: Cli, pki: TestPKI) -> None:
    """One rule for both commands: 20 days left is a warning for fetch too."""
    cert = pki.client("fetch-soon", not_after=datetime.now(UTC) + timedelta(days=20))
    outcome = cli(
        "fetch",
        "--meter",
        "M1",
        "--start",
        "2024-02-01",
        "--end",
        "2024-02-02",
        "--cert",
        str(cert),
    )
    assert outcome.exit_code == 0
    assert "expires in" in outcome.stderr


@pytest.mark.parametrize(
    ("stem", "validity", "message"),
    [
        (
            "check-expired",
            {
                "not_before": datetime.now(UTC) - timedelta(days=60),
                "not_after": datetime.now(UTC) - timedelta(days=1),
            },
            "expired on",
        ),
        ("check-future", {"not_before": datetime.now(UTC) + timedelta(days=3)}, "not valid until"),
    ],
    ids=["expired", "not yet valid"],
)
def test_a_certificate_outside_its_validity_fails_with_exit_2_and_contacts_nobody(
    cli: Cli,
    pki: TestPKI,
    server: ServerThread,
    stem: str,
    validity: dict[str, datetime],
    message: str,
) -> None:
    cert = pki.client(stem, **validity)
    outcome = check(cli, server.base_url, cert)
    assert outcome.exit_code == 2
    marks = verdicts(outcome)
    assert marks["validity"] == "✗" and marks["TCP"] == "-"
    assert message in outcome.stdout
    assert server.state.log == []


def test_a_wrong_password_is_exit_2_and_never_echoed(cli: Cli, pki: TestPKI) -> None:
    secret = "n0t-The-Pa55word"
    outcome = check(
        cli, f"https://127.0.0.1:{closed_port()}/", pki.client_p12, **{"OMAR_CERT_PASSWORD": secret}
    )
    assert outcome.exit_code == 2
    assert verdicts(outcome)["certificate"] == "✗"
    assert "wrong password" in outcome.stdout
    assert secret not in outcome.stdout + outcome.stderr


def test_an_unreachable_server_is_exit_1(cli: Cli, pki: TestPKI) -> None:
    outcome = check(cli, f"https://127.0.0.1:{closed_port()}/", pki.client_p12)
    assert outcome.exit_code == 1
    marks = verdicts(outcome)
    assert marks["certificate"] == "✓" and marks["TCP"] == "✗" and marks["TLS"] == "-"
    assert "Connection refused" in outcome.stdout


def test_a_server_not_in_the_ca_bundle_is_untrusted_exit_3(
    cli: Cli, server: ServerThread, tmp_path: Path, pki: TestPKI
) -> None:
    other = TestPKI.create(tmp_path / "other")
    outcome = check(cli, server.base_url, pki.client_p12, "--ca-bundle", str(other.ca))
    assert outcome.exit_code == 3
    marks = verdicts(outcome)
    assert marks["server certificate"] == "✗" and marks["our certificate"] == "-"
    assert "does not verify" in outcome.stdout and "--ca-bundle" in outcome.stdout
    assert server.state.log == []


@pytest.mark.parametrize("max_tls", [None, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_a_certificate_from_another_ca_is_refused_exit_3(
    pki: TestPKI, stranger: TestPKI, tmp_path: Path, max_tls: ssl.TLSVersion | None
) -> None:
    with serve_in_thread(pki, max_tls=max_tls) as running:
        run = Cli(pki, tmp_path / "out", running)
        outcome = check(run, running.base_url, stranger.client_pem)
        assert running.state.log == []
    assert outcome.exit_code == 3, outcome.stdout
    assert "✗" in outcome.stdout
    assert "refuse" in outcome.stdout
    assert verdicts(outcome)["session"] == "-"


def test_a_certificate_others_can_read_is_a_warning(
    cli: Cli, pki: TestPKI, server: ServerThread, tmp_path: Path
) -> None:
    loose = tmp_path / "loose.pem"
    shutil.copy(pki.client_pem, loose)
    loose.chmod(0o644)
    outcome = check(cli, server.base_url, loose)
    assert outcome.exit_code == 0
    assert verdicts(outcome)["permissions"] == "!"
    assert "chmod 600" in outcome.stdout and "every user" in outcome.stdout


def test_a_missing_certificate_option_is_exit_2(offline_cli: Cli) -> None:
    outcome = offline_cli(
        "check",
        "--base-url",
        "https://127.0.0.1:9/",
        env={"OMAR_CERT": None},  # type: ignore[dict-item]
    )
    assert outcome.exit_code == 2
    assert "client certificate is required" in outcome.stderr


def test_the_library_returns_frozen_results(pki: TestPKI) -> None:
    report = run_check(
        base_url=f"https://127.0.0.1:{closed_port()}/",
        cert=pki.client_p12,
        password=lambda _what: DEMO_PASSWORD,
    )
    assert report.exit_code == 1
    assert [c.verdict for c in report.checks][:6] == [OK, OK, OK, OK, OK, FAIL]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.checks[0].verdict = FAIL  # type: ignore[misc]


def test_a_clock_far_from_the_servers_is_a_warning() -> None:
    late = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert _clock(late).verdict == WARN
    assert "ahead of the server" in _clock(late).reason
    assert _clock(None).verdict == SKIP
    now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert _clock(now).verdict == OK


@pytest.mark.parametrize(
    ("mode", "verdict", "who"),
    [
        (0o640, WARN, "its group can read it"),
        (0o604, WARN, "every user can read it"),
        (0o644, WARN, "its group and every user can read it"),
        (0o600, OK, "only you can read it"),
        (0o400, OK, "only you can read it"),
    ],
)
def test_a_certificate_readable_by_its_group_alone_is_a_warning_too(
    tmp_path: Path, mode: int, verdict: str, who: str
) -> None:
    """Group-readable only (0640, a shared group on a server) is as loose as world-readable."""
    key = tmp_path / "key.pem"
    key.write_bytes(b"not read: only the mode matters")
    key.chmod(mode)
    found = _permissions(key)
    assert (found.verdict, who in found.reason) == (verdict, True), found.reason


@pytest.mark.parametrize(
    "openssl_server", [["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]], indirect=True
)
def test_a_server_offering_only_tls_1_1_fails_the_tls_step_with_fetchs_words(
    offline_cli: Cli,
    pki: TestPKI,
    openssl_server: str,  # noqa: F811
) -> None:
    """TLS 1.1 only: the TLS step fails (exit 3) naming the protocol, as ``fetch`` does."""
    done = offline_cli(
        "check",
        "--base-url",
        openssl_server,
        "--cert",
        str(pki.client_p12),
        "--ca-bundle",
        str(pki.ca),
        "--json",
    )
    report = json.loads(done.stdout)
    steps = {c["name"]: (c["verdict"], c["reason"]) for c in report["checks"]}
    assert done.exit_code == 3, steps
    assert steps["TLS"][0] == FAIL
    assert "the server offers no TLS version omar-bulk accepts (1.2 or newer)" in steps["TLS"][1]
    assert steps["our certificate"][0] == SKIP
