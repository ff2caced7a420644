"""Every verdict on a server answer, as a table: no server needed."""

from __future__ import annotations

import email.utils

import pytest

from omar_bulk.answers import (
    RETRY_AFTER_CAP,
    Head,
    is_login_page,
    judge_download,
    judge_login,
    login_redirect,
    looks_like_html,
    page_error,
    page_headline,
    parse_retry_after,
    redirect_loop,
)
from omar_bulk.errors import (
    AuthError,
    OmarBulkError,
    PermanentError,
    RetryableError,
    SessionExpired,
    UnreachableError,
)

BASE = "https://omar.example:444/"
URL = BASE + "getMDEF.jsp?x=1"


@pytest.mark.parametrize(
    ("status", "body", "expected", "exit_code"),
    [
        (200, b"<html>welcome</html>", None, None),
        (401, b"", AuthError, 3),
        (403, b"", AuthError, 3),
        (400, b"<title>400 No required SSL certificate was sent</title>", AuthError, 3),
        (400, b"<h1>400 Bad Request</h1><p>Client Certificate Required</p>", AuthError, 3),
        (400, b"<title>Bad Request</title>", UnreachableError, 1),
        (404, b"", UnreachableError, 1),
        (429, b"", RetryableError, 1),
        (500, b"", RetryableError, 1),
        (502, b"", RetryableError, 1),
        (503, b"", RetryableError, 1),
        (302, b"", UnreachableError, 1),  # a redirect with nowhere to go
    ],
)
def test_login_answers(
    status: int, body: bytes, expected: type[OmarBulkError] | None, exit_code: int | None
) -> None:
    """Each login status has one meaning; the fatal ones carry the CLI's exit code."""
    verdict = judge_login(Head(status, "Reason"), body, BASE)
    if expected is None:
        assert verdict is None
    else:
        assert type(verdict) is expected
        assert verdict is not None and verdict.exit_code == exit_code


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (Head(200), None),
        (Head(200, content_encoding="identity"), None),
        (Head(200, content_encoding="gzip"), None),
        (Head(200, content_encoding="deflate"), None),
        (Head(200, content_encoding="br"), RetryableError),
        (Head(200, content_encoding="zstd"), RetryableError),
        (Head(401), AuthError),
        (Head(403), AuthError),
        (Head(301, location="/login"), SessionExpired),
        (Head(302, location="/"), SessionExpired),
        (Head(307), SessionExpired),
        (Head(404), PermanentError),
        (Head(400), PermanentError),
        (Head(410), PermanentError),
        (Head(204), PermanentError),
        (Head(206), PermanentError),
        (Head(429), RetryableError),
        (Head(500), RetryableError),
        (Head(503), RetryableError),
        (Head(504), RetryableError),
    ],
)
def test_download_answers(head: Head, expected: type[OmarBulkError] | None) -> None:
    """The status line and headers of a download, judged before the body is read."""
    verdict = judge_download(head, URL)
    assert (type(verdict) if verdict is not None else None) is expected


@pytest.mark.parametrize(("status", "pushback"), [(429, True), (503, True), (500, False)])
def test_only_429_and_503_push_back(status: int, pushback: bool) -> None:
    for verdict in (judge_download(Head(status), URL), judge_login(Head(status), b"", BASE)):
        assert isinstance(verdict, RetryableError) and verdict.pushback is pushback


def test_retry_after_travels_with_the_verdict() -> None:
    for verdict in (
        judge_download(Head(503, retry_after="7"), URL),
        judge_login(Head(503, retry_after="7"), b"", BASE),
    ):
        assert isinstance(verdict, RetryableError) and verdict.retry_after == 7.0


def test_auth_errors_are_fatal_and_say_which_status() -> None:
    verdict = judge_download(Head(403, "Forbidden"), URL)
    assert isinstance(verdict, AuthError) and "403 Forbidden" in str(verdict)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("12", 12.0),
        (" 3.5 ", 3.5),
        ("-4", 0.0),
        ("nan", None),
        ("soon", None),
        ("99999", RETRY_AFTER_CAP),
        ("inf", RETRY_AFTER_CAP),
    ],
)
def test_retry_after_values(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0
    stamp = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(stamp, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/login", "https://omar.example:444/login"),
        ("https://omar.example:444/a", "https://omar.example:444/a"),
        ("login.jsp", "https://omar.example:444/login.jsp"),
    ],
)
def test_login_redirects_on_the_same_origin_are_followed(location: str, expected: str) -> None:
    assert login_redirect(BASE, Head(302, location=location)) == expected


@pytest.mark.parametrize(
    "location",
    [
        "http://omar.example:444/",  # plain http
        "http://omar.example/",
        "https://elsewhere.example:444/",  # another host
        "https://omar.example/",  # another port (443)
        "//evil.example/",
        "ftp://omar.example:444/",
    ],
)
def test_login_redirects_off_https_or_the_origin_are_refused(location: str) -> None:
    with pytest.raises(AuthError):
        login_redirect(BASE, Head(302, location=location))


def test_a_redirect_without_location_is_unreachable() -> None:
    with pytest.raises(UnreachableError):
        login_redirect(BASE, Head(302))


def test_a_redirect_loop_names_its_hops() -> None:
    error = redirect_loop([BASE, BASE + "a", BASE])
    assert "2 times" in str(error) and "/a" in str(error)


@pytest.mark.parametrize(
    ("head", "content_type", "html"),
    [
        (b"<!DOCTYPE html><html>", None, True),
        (b"\xef\xbb\xbf  <HTML>", None, True),
        (b"\r\n<html lang=en>", None, True),
        (b"", "text/html; charset=utf-8", True),
        (b"MDEF data", "TEXT/HTML", True),
        (b"MDEF data <html>", None, False),
        (b"A,B,C\n", "text/csv", False),
    ],
)
def test_html_is_recognised(head: bytes, content_type: str | None, html: bool) -> None:
    assert looks_like_html(head, content_type) is html


def test_a_login_page_means_the_session_expired_other_pages_fail() -> None:
    login = page_error(b"<title>OMAR Login</title><p>Please log in</p>", None)
    assert isinstance(login, SessionExpired)
    other = page_error(b"<title>Unable to process</title>", "errors/x.html")
    assert isinstance(other, PermanentError) and "errors/x.html" in str(other)


def test_page_headlines_are_escaped_and_short() -> None:
    assert page_headline(b"<title>\x1b[31mRed\x1b[0m</title>") == "\\x1b[31mRed\\x1b[0m"
    assert page_headline(b"<body><p>first line</p></body>") == "first line"
    assert page_headline(b"") == "(empty page)"
    assert len(page_headline(b"<title>" + b"x" * 500 + b"</title>")) <= 120


def test_reason_phrases_are_escaped() -> None:
    verdict = judge_download(Head(503, "Busy\x1b]0;owned\x07\u202e"), URL)
    assert verdict is not None
    assert "\x1b" not in str(verdict) and "\u202e" not in str(verdict)
    assert "\\x1b" in str(verdict) and "\\u202e" in str(verdict)


def test_framing_and_encoding_of_a_head() -> None:
    assert Head(200, content_length=0).framed
    assert Head(200, chunked=True).framed
    assert not Head(200).framed
    assert Head(200, content_encoding=" GZIP ").encoding == "gzip"
    assert Head(200, content_encoding="Identity").encoding is None


LOGIN_MESSAGES = [
    (401, b"", "the server refused the login with HTTP 401 Reason: check that the certificate is"
     " registered for OMAR-Online"),
    (400, b"<title>No required SSL certificate was sent</title>",
     "the server refused our client certificate: 'No required SSL certificate was sent'"),
    (429, b"", "login answered HTTP 429 Reason"),
    (300, b"", f"login at {BASE} answered HTTP 300 Reason with no way on"),
    (399, b"", f"login at {BASE} answered HTTP 399 Reason with no way on"),
    (400, b"bad request", f"login at {BASE} answered HTTP 400 Reason"),
    (404, b"", f"login at {BASE} answered HTTP 404 Reason"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "message"), LOGIN_MESSAGES)
def test_login_verdicts_say_what_the_server_answered(
    status: int, body: bytes, message: str
) -> None:
    """What the user reads when a login fails is part of the verdict: pinned word for word."""
    verdict = judge_login(Head(status, "Reason"), body, BASE)
    assert verdict is not None and str(verdict) == message


DOWNLOAD_MESSAGES = [
    (Head(401, "Unauthorized"), AuthError,
     f"the server answered HTTP 401 Unauthorized to {URL}: this certificate is not allowed to"
     " download; check its registration in OMAR-Online"),
    (Head(302, location=BASE + "login"), SessionExpired,
     f"redirected to {BASE}login: the login session expired"),
    (Head(300), SessionExpired, "redirected to elsewhere: the login session expired"),
    (Head(302, location="/" + "x" * 200), SessionExpired,
     f"redirected to /{'x' * 118}…: the login session expired"),
    (Head(503, "Busy", retry_after="7"), RetryableError, "HTTP 503 Busy"),
    (Head(404, "Not Found"), PermanentError, "HTTP 404 Not Found"),
    (Head(200, content_encoding="br"), RetryableError,
     "the body came with Content-Encoding 'br', which omar-bulk did not ask for and cannot"
     " check"),
]  # fmt: skip


@pytest.mark.parametrize(("head", "kind", "message"), DOWNLOAD_MESSAGES)
def test_download_verdicts_say_what_the_server_answered(
    head: Head, kind: type[OmarBulkError], message: str
) -> None:
    verdict = judge_download(head, URL)
    assert type(verdict) is kind and str(verdict) == message


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://omar.example:444/x", "the server redirected the login to http://omar.example:444,"
         " which is not https: omar-bulk sends nothing over plain http; check --base-url"),
        ("https://other.example:8443/x", "the server redirected the login to another server"
         " (https://other.example:8443); omar-bulk keeps the session with the server it was"
         " given: check --base-url"),
        ("https://other.example/x", "the server redirected the login to another server"
         " (https://other.example); omar-bulk keeps the session with the server it was given:"
         " check --base-url"),
    ],
)  # fmt: skip
def test_refused_login_redirects_name_where_they_led(location: str, message: str) -> None:
    with pytest.raises(AuthError) as refused:
        login_redirect(BASE, Head(302, location=location))
    assert str(refused.value) == message


def test_the_default_https_port_is_the_same_origin_written_or_not() -> None:
    assert login_redirect("https://omar.example/", Head(302, location="https://omar.example:443/a"))
    assert login_redirect("https://omar.example:443/", Head(302, location="https://omar.example/b"))


def test_a_redirect_without_location_says_so() -> None:
    with pytest.raises(UnreachableError) as nowhere:
        login_redirect(BASE, Head(302))
    assert str(nowhere.value) == "the login answered HTTP 302 without saying where to go"


def test_a_redirect_loop_shows_its_last_four_hops() -> None:
    hops = ["https://h/a", "https://h/", "https://h", "https://h/c", "https://h/d" + "x" * 80]
    assert str(redirect_loop(hops)) == (
        "the login was redirected 4 times without opening a session"
        f" (/ -> / -> /c -> /d{'x' * 57}…): the server is misconfigured or in maintenance;"
        " try again later"
    )


def test_page_errors_quote_the_page_and_where_it_was_kept() -> None:
    expired = page_error(b"<title>Please log in</title>", None)
    assert isinstance(expired, SessionExpired)
    assert str(expired) == "login page 'Please log in': the session expired"
    other = page_error(b"<title>Oops</title>", None)
    assert str(other) == "the server sent an HTML page instead of data: 'Oops'"
    kept = page_error(b"<title>Oops</title>", "/x/y")
    assert str(kept) == "the server sent an HTML page instead of data: 'Oops' (kept at /x/y)"
    assert is_login_page(b"<p>Session has expired</p>") and not is_login_page(b"<p>Oops</p>")


def test_page_headlines_survive_bad_utf8_and_skip_empty_titles() -> None:
    assert page_headline(b"<title>caf\xe9</title>") == "caf\ufffd"
    assert page_headline(b"<title> </title><p>\n</p><b>first line</b>") == "first line"
    assert page_headline(b"<title>Title</title><b>first line</b>") == "Title"


def test_html_is_sniffed_in_the_first_64_bytes_only() -> None:
    assert looks_like_html(b" " * 58 + b"<html>", None)
    assert not looks_like_html(b" " * 60 + b"<html>", None)
    assert looks_like_html(b"\xef\xbb\xbf\r\n<!DOCTYPE html>", None)
    assert not looks_like_html(b"XX<html>", None)


def test_retry_after_dates_count_from_the_given_clock() -> None:
    when = email.utils.formatdate(1_000_000_000, usegmt=True)
    assert parse_retry_after(when, now=1_000_000_000 - 30) == 30.0


LOGIN_URL = "https://omar.example:444/login"


def test_an_unusable_redirect_is_quoted_cut_to_120_characters() -> None:
    location = "https://omar.example:99999/" + "a" * 200
    with pytest.raises(UnreachableError) as caught:
        login_redirect(LOGIN_URL, Head(302, location=location))
    shown = location[:119] + "…"
    assert str(caught.value) == (
        f"the login redirected to an address that cannot be used ({shown!r}):"
        " the server is misconfigured"
    )


def test_a_redirect_to_a_url_without_a_host_names_its_scheme_alone() -> None:
    with pytest.raises(AuthError) as caught:
        login_redirect(LOGIN_URL, Head(302, location="file:///etc/passwd"))
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
    "location",
    ["https://127.0.0.1:99999/", "https://[::1/", "https://127.0.0.1:notaport/"],
    ids=["port-out-of-range", "broken-ipv6", "port-not-a-number"],
)
def test_a_malformed_login_redirect_is_an_omar_bulk_error_not_a_traceback(location: str) -> None:
    """A hostile login answering ``302 Location: https://127.0.0.1:99999/`` made ``fetch``
    die with an ExceptionGroup traceback (exit 1, no report, no --metrics file) and
    ``check`` with a ValueError traceback: urlsplit's ``.port`` and the IPv6 check raise
    ValueError, which nothing translates."""
    head = Head(status=302, reason="Found", location=location)
    with pytest.raises(OmarBulkError):
        login_redirect("https://127.0.0.1:8444/", head)
