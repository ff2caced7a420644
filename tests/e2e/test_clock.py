"""Code that reads the machine's clock and time zone itself, as a cron job runs it: no ``now``
or ``--today`` injected. The clock is moved with time-machine, which also sets the machine's
time zone when the destination carries a ``ZoneInfo`` (as ``TZ`` would)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from omar_bulk.check import OK, WARN, _clock
from omar_bulk.dates import california_today, parse_date
from omar_bulk.errors import CertificateError
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.tls import load_identity

from ..conftest import Cli

UTC_ZONE = ZoneInfo("UTC")


def machine(text: str, zone: str = "UTC") -> datetime:
    """The instant ``text`` (UTC), on a machine whose local time zone is ``zone``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).astimezone(ZoneInfo(zone))


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
@pytest.mark.parametrize(
    ("utc", "california"),
    [
        # winter (PST, UTC-8): from 00:00 to 08:00 UTC California is still on the day before
        ("2026-01-15T00:00:00", "2026-01-14"),
        ("2026-01-15T07:59:59", "2026-01-14"),
        ("2026-01-15T08:00:00", "2026-01-15"),
        ("2026-01-01T03:00:00", "2025-12-31"),  # and the year before, on New Year's night
        # summer (PDT, UTC-7): the day turns at 07:00 UTC
        ("2026-07-15T06:59:59", "2026-07-14"),
        ("2026-07-15T07:00:00", "2026-07-15"),
        # DST begins on 2026-03-08 at 02:00 PST (10:00 UTC): that midnight is PST's
        ("2026-03-08T07:59:59", "2026-03-07"),
        ("2026-03-08T08:00:00", "2026-03-08"),
        ("2026-03-09T06:59:59", "2026-03-08"),
        ("2026-03-09T07:00:00", "2026-03-09"),
        # DST ends on 2026-11-01 at 02:00 PDT (09:00 UTC): that midnight is PDT's
        ("2026-11-01T06:59:59", "2026-10-31"),
        ("2026-11-01T07:00:00", "2026-11-01"),
        ("2026-11-02T07:59:59", "2026-11-01"),
        ("2026-11-02T08:00:00", "2026-11-02"),
    ],
)
def test_today_is_californias_date_whatever_the_machines_clock_and_zone(
    zone: str, utc: str, california: str
) -> None:
    """``california_today()`` with nothing injected, on a machine kept in UTC (or in Tokyo,
    a day ahead of California): California's date, by its own offset on that day."""
    with time_machine.travel(machine(utc, zone), tick=False):
        assert california_today() == date.fromisoformat(california)
        assert parse_date("today") == date.fromisoformat(california)
        assert parse_date("yesterday") == date.fromisoformat(california) - timedelta(days=1)


def test_a_cron_run_after_utc_midnight_asks_for_californias_yesterday(offline_cli: Cli) -> None:
    """``--end yesterday`` with no ``--today``, at 03:00 UTC on 2026-01-15: in California it
    is still the 14th, so yesterday is the 13th (not the 14th, as UTC's date would make it)."""
    with time_machine.travel(machine("2026-01-15T03:00:00"), tick=False):
        outcome = offline_cli(
            "fetch", "--meter", "M1", "--start", "2026-01-01", "--end", "yesterday",
            "--dry-run", "--cert", "unused.p12",
        )  # fmt: skip
    assert outcome.exit_code == 0, outcome.stderr
    urls = outcome.stdout.split()
    assert len(urls) == 1
    assert "startDate=01%2F01%2F2026&endDate=01%2F13%2F2026&" in urls[0]


def _identity(pki: TestPKI, stem: str, **validity: datetime):  # type: ignore[no-untyped-def]
    return load_identity(pki.client(stem, **validity), password=lambda _what: DEMO_PASSWORD)


def _at_20_utc_today() -> datetime:
    return datetime.now(UTC).replace(hour=20, minute=0, second=0, microsecond=0)


def test_a_certificate_that_expired_earlier_today_is_expired(pki: TestPKI) -> None:
    """Expired at 18:00 UTC, and it is 20:00 the same day: expired, not "0 days left"; one
    that expires at 22:00 is still valid and warns; one valid from 22:00 is not yet valid."""
    now = _at_20_utc_today()
    month = timedelta(days=30)
    earlier = _identity(
        pki, "expired-today", not_before=now - month, not_after=now - timedelta(hours=2)
    )
    later = _identity(
        pki, "expires-today", not_before=now - month, not_after=now + timedelta(hours=2)
    )
    tonight = _identity(
        pki, "valid-tonight", not_before=now + timedelta(hours=2), not_after=now + month
    )
    with time_machine.travel(now, tick=False):
        with pytest.raises(CertificateError, match="expired on"):
            earlier.validity_warnings()
        assert later.validity_warnings() == [
            f"client certificate {later.source} expires in 0 day(s), on {now:%Y-%m-%d}"
        ]
        with pytest.raises(CertificateError, match="not valid until"):
            tonight.validity_warnings()


def test_fetch_and_check_refuse_a_certificate_that_expired_earlier_today(
    offline_cli: Cli, pki: TestPKI
) -> None:
    """The same rule on the default path of both commands: exit 2, nothing sent."""
    now = _at_20_utc_today()
    cert = pki.client(
        "expired-today-cli", not_before=now - timedelta(days=30), not_after=now - timedelta(hours=2)
    )
    with time_machine.travel(now, tick=False):
        fetched = offline_cli(
            "fetch", "--meter", "M1", "--start", "2024-02-01", "--end", "2024-02-02",
            "--cert", str(cert), "--base-url", "https://127.0.0.1:9/",
        )  # fmt: skip
        checked = offline_cli("check", "--cert", str(cert), "--base-url", "https://127.0.0.1:9/")
    assert fetched.exit_code == 2 and "expired on" in fetched.stderr, fetched.stderr
    assert checked.exit_code == 2 and "expired on" in checked.stdout, checked.stdout


def _date_header(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


@pytest.mark.parametrize(
    ("server_offset", "verdict", "words"),
    [
        (timedelta(minutes=-10), WARN, "10 min ahead of the server"),
        (timedelta(minutes=10), WARN, "10 min behind the server"),
        (timedelta(seconds=-121), WARN, "2 min ahead of the server"),
        (timedelta(seconds=121), WARN, "2 min behind the server"),
        (timedelta(seconds=-119), OK, "within 119 s"),
        (timedelta(seconds=119), OK, "within 119 s"),
        (timedelta(hours=3), WARN, "3.0 h behind the server"),
    ],
)
def test_a_clock_off_in_either_direction_is_told_which_way(
    server_offset: timedelta, verdict: str, words: str
) -> None:
    """The server's Date against this machine's clock (frozen): further than 2 minutes either
    way is a warning saying which way; nearer is fine."""
    now = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)
    with time_machine.travel(now, tick=False):
        found = _clock(_date_header(now + server_offset))
    assert (found.verdict, words in found.reason) == (verdict, True), found.reason
