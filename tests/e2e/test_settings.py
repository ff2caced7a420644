"""Settings refuse what they cannot use safely, and never echo a secret while doing so."""

from __future__ import annotations

import pytest

from omar_bulk.errors import UsageError
from omar_bulk.plan import Plan
from omar_bulk.settings import Settings

from ..conftest import Cli

ONE = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-01-31"]
SECRET = "hunter2-s3cret"


@pytest.mark.parametrize(
    "url",
    [
        f"https://user:{SECRET}@127.0.0.1:9/",
        f"https://{SECRET}@127.0.0.1:9/",
        f"https://user:{SECRET}@127.0.0.1:bad/",  # once echoed by the bad-port message
        f"http://user:{SECRET}@127.0.0.1:9/",  # once echoed by the https-only message
        f"https://user:pa/{SECRET}@127.0.0.1:9/",  # a '/' in the password ends the host part
    ],
)
def test_a_password_in_the_base_url_is_refused_and_never_printed(
    offline_cli: Cli, url: str
) -> None:
    outcome = offline_cli("fetch", *ONE, "--base-url", url)
    assert outcome.exit_code == 2
    assert "user name or password in the URL is not accepted" in outcome.stderr
    assert SECRET not in outcome.stderr + outcome.stdout


def test_a_password_in_the_base_url_from_the_environment_is_refused(offline_cli: Cli) -> None:
    """OMAR_BASE_URL goes through the same check."""
    outcome = offline_cli("fetch", *ONE, env={"OMAR_BASE_URL": f"https://u:{SECRET}@127.0.0.1:9/"})
    assert outcome.exit_code == 2 and "not accepted" in outcome.stderr
    assert SECRET not in outcome.stderr + outcome.stdout


def test_the_library_refuses_it_too() -> None:
    """Settings is the one place: a notebook building Settings gets the same refusal."""
    with pytest.raises(UsageError) as caught:
        Settings(plan=Plan(lambda: []), base_url=f"https://u:{SECRET}@h/")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [("https://[::1/", "is not a valid URL"), ("https://h\x1b[2J/", "\\x1b")],
)
def test_a_malformed_base_url_is_exit_2_and_shown_escaped(
    offline_cli: Cli, url: str, message: str
) -> None:
    outcome = offline_cli("fetch", *ONE, "--base-url", url)
    assert outcome.exit_code == 2 and message in outcome.stderr
    assert "\x1b" not in outcome.stderr


def test_revisit_days_reach_back_exactly_that_many_days() -> None:
    """``--revisit-days 3`` on 2024-03-10: files whose range ends on 03-07 or later are asked
    for again (the 3 days before today, and today)."""
    from datetime import date

    settings = Settings(
        plan=Plan(lambda: []), base_url="https://127.0.0.1:9/", revisit_days=3,
        today=date(2024, 3, 10),
    )  # fmt: skip
    assert settings.revisit_from() == date(2024, 3, 7)
    assert Settings(
        plan=Plan(lambda: []), base_url="https://127.0.0.1:9/", revisit_days=0,
        today=date(2024, 3, 10),
    ).revisit_from() == date(2024, 3, 10)  # fmt: skip
