"""Edges of the answers, the URL rules and the dates that the main tables leave open: how an
unusable redirect, an unknown encoding or a long id is quoted, HTTP-date Retry-After against the
real clock, dotted ids read back from the layout. Pure and quick (``make mutation``).
"""

from __future__ import annotations

from datetime import date
from pathlib import PurePosixPath

import pytest

from omar_bulk.answers import (
    RETRY_AFTER_CAP,
    Head,
    judge_download,
    login_redirect,
    page_headline,
    parse_retry_after,
)
from omar_bulk.dates import parse_date
from omar_bulk.errors import AuthError, RetryableError, UnreachableError
from omar_bulk.plan import Item
from omar_bulk.protocol import normalise_base_url, parse_relative_path, relative_path

HERE = "https://omar.example:444/login"


def test_an_unusable_redirect_is_quoted_cut_to_120_characters() -> None:
    location = "https://omar.example:99999/" + "a" * 200
    with pytest.raises(UnreachableError) as caught:
        login_redirect(HERE, Head(302, location=location))
    shown = location[:119] + "…"
    assert str(caught.value) == (
        f"the login redirected to an address that cannot be used ({shown!r}):"
        " the server is misconfigured"
    )


def test_a_redirect_to_a_url_without_a_host_names_its_scheme_alone() -> None:
    with pytest.raises(AuthError) as caught:
        login_redirect(HERE, Head(302, location="file:///etc/passwd"))
    assert str(caught.value).startswith("the server redirected the login to file://, which is")


def test_an_unknown_encoding_is_quoted_cut_to_40_characters() -> None:
    verdict = judge_download(Head(200, content_encoding="br" + "x" * 60), "https://x/")
    assert isinstance(verdict, RetryableError)
    shown = ("br" + "x" * 60)[:39] + "…"
    assert str(verdict) == (
        f"the body came with Content-Encoding {shown!r}, which omar-bulk did not ask for"
        " and cannot check"
    )


def test_a_page_title_wins_over_text_before_it() -> None:
    assert page_headline(b"stray text<title>The Title</title><p>body</p>") == "The Title"
    assert page_headline(b"stray text<title> </title><p>body</p>") == "stray text"


def test_an_http_date_retry_after_is_read_against_the_clock() -> None:
    assert parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT") == RETRY_AFTER_CAP
    assert parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT") == 0.0


@pytest.mark.parametrize(
    ("base", "normal"),
    [
        ("https://omar.example:444", "https://omar.example:444/"),
        ("https://omar.example:444///", "https://omar.example:444/"),
        ("https://omar.example/omarX/", "https://omar.example/omarX/"),
        ("https://omar.example/omarX", "https://omar.example/omarX/"),
    ],
)
def test_a_base_url_ends_in_exactly_one_slash(base: str, normal: str) -> None:
    assert normalise_base_url(base) == normal


@pytest.mark.parametrize("ident", ["M.1", "a.b.c", "G_1.x", "v1.mdef"])
def test_dotted_ids_read_back_from_their_path(ident: str) -> None:
    item = Item("meter", ident, date(2024, 1, 1), date(2024, 1, 31), "csv", "DST")
    assert parse_relative_path(relative_path(item)) == item
    assert parse_relative_path(PurePosixPath(f"meter/{ident}/{ident}.csv")) is None


def test_counting_back_past_the_calendar_names_what_was_given() -> None:
    with pytest.raises(ValueError) as caught:
        parse_date(" -99999d ", today=date(200, 1, 1))
    assert str(caught.value) == "' -99999d ' counted back from 0200-01-01 falls before 0001-01-01"
