"""Which proxy a run uses, and what the proxy's answers mean: tables, no network."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from omar_bulk.errors import (
    AuthError,
    ConnectionDropped,
    ProxyAuthError,
    ProxyError,
    RetryableError,
    UsageError,
)
from omar_bulk.plan import Plan
from omar_bulk.proxy import Proxy, auth_refused, bypassed, choose, parse_proxy_url, proxy_for
from omar_bulk.session import classify_client_error
from omar_bulk.settings import Settings

from ..conftest import Cli

SERVER = "https://omar-online.caiso.com:444/"


# --- which variable -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "option", "direct", "expected"),
    [
        ({}, None, False, None),
        ({"HTTPS_PROXY": "http://a:1"}, None, False, ("HTTPS_PROXY", "http://a:1")),
        ({"https_proxy": "http://b:1"}, None, False, ("https_proxy", "http://b:1")),
        # lower case first, as curl reads them
        (
            {"HTTPS_PROXY": "http://a:1", "https_proxy": "http://b:1"},
            None,
            False,
            ("https_proxy", "http://b:1"),
        ),
        # set but empty: direct, and the upper-case one is not consulted
        ({"HTTPS_PROXY": "http://a:1", "https_proxy": ""}, None, False, None),
        ({"ALL_PROXY": "http://c:1"}, None, False, ("ALL_PROXY", "http://c:1")),
        (
            {"all_proxy": "http://d:1", "ALL_PROXY": "http://c:1"},
            None,
            False,
            ("all_proxy", "http://d:1"),
        ),
        (
            {"ALL_PROXY": "http://c:1", "HTTPS_PROXY": "http://a:1"},
            None,
            False,
            ("HTTPS_PROXY", "http://a:1"),
        ),
        # http_proxy is for http:// servers only (and HTTP_PROXY is never trusted, httpoxy)
        ({"http_proxy": "http://e:1", "HTTP_PROXY": "http://e:1"}, None, False, None),
        (
            {"OMAR_PROXY": "http://f:1", "https_proxy": "http://b:1"},
            None,
            False,
            ("OMAR_PROXY", "http://f:1"),
        ),
        ({"OMAR_PROXY": "", "https_proxy": "http://b:1"}, None, False, None),
        ({"OMAR_PROXY": "http://f:1"}, "http://g:1", False, ("--proxy", "http://g:1")),
        ({"OMAR_PROXY": "http://f:1"}, "", False, None),
        ({"HTTPS_PROXY": "http://a:1"}, None, True, None),
        ({"HTTPS_PROXY": "http://a:1"}, "http://g:1", True, None),
    ],
)
def test_the_setting_that_names_the_proxy(
    environ: dict[str, str],
    option: str | None,
    direct: bool,
    expected: tuple[str, str] | None,
) -> None:
    """--no-proxy, --proxy, OMAR_PROXY, https_proxy, HTTPS_PROXY, all_proxy, ALL_PROXY: the
    first that is set decides, even when empty."""
    assert choose(environ, option=option, direct=direct) == expected


# --- NO_PROXY -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "direct"),
    [
        ("omar-online.caiso.com", 444, "", False),
        ("omar-online.caiso.com", 444, "*", True),
        ("omar-online.caiso.com", 444, "omar-online.caiso.com", True),
        ("OMAR-Online.CAISO.com.", 444, "omar-online.caiso.com", True),
        ("omar-online.caiso.com", 444, "caiso.com", True),
        ("omar-online.caiso.com", 444, ".caiso.com", True),
        ("caiso.com", 444, ".caiso.com", True),
        ("omar-online.caiso.com", 444, "*.caiso.com", True),
        ("omar-online.caiso.com", 444, "iso.com", False),  # not a suffix at a dot
        ("omar-online.caiso.com", 444, "caiso.com.org", False),
        ("omar-online.caiso.com", 444, "example.com, .caiso.com", True),
        ("omar-online.caiso.com", 444, "example.com .caiso.com", True),
        ("omar-online.caiso.com", 444, "example.com,,localhost", False),
        # ports: an entry with a port matches that port only
        ("omar-online.caiso.com", 444, "omar-online.caiso.com:444", True),
        ("omar-online.caiso.com", 444, "omar-online.caiso.com:443", False),
        ("omar-online.caiso.com", 444, ".caiso.com:444", True),
        ("omar-online.caiso.com", 444, "caiso.com:x", False),
        # IP addresses: the address itself, however written; CIDR ranges
        ("10.1.2.3", 444, "10.1.2.3", True),
        ("10.1.2.3", 444, "10.1.2.4", False),
        ("10.1.2.3", 444, "10.1.2.3:444", True),
        ("10.1.2.3", 444, "10.1.2.3:443", False),
        ("10.1.2.3", 444, "10.0.0.0/8", True),
        ("10.1.2.3", 444, "192.168.0.0/16", False),
        ("10.1.2.3", 444, "1.2.3", False),  # no name-suffix matching for addresses
        ("::1", 444, "::1", True),
        ("::1", 444, "0:0::1", True),
        ("[::1]", 444, "[::1]:444", True),
        ("::1", 444, "[::1]:443", False),
        ("fd00::5", 444, "fd00::/8", True),
        ("fd00::5", 444, "10.0.0.0/8", False),
        ("omar-online.caiso.com", 444, "10.0.0.0/8", False),
        ("omar-online.caiso.com", 444, "not-a-cidr/99", False),
    ],
)
def test_no_proxy_entries(host: str, port: int, no_proxy: str, direct: bool) -> None:
    """Host names (and the hosts below them), .domains, *, IP addresses and ranges, ports."""
    assert bypassed(host, port, no_proxy) is direct


@pytest.mark.parametrize(
    ("environ", "direct"),
    [
        ({"NO_PROXY": "caiso.com"}, True),
        ({"no_proxy": "caiso.com"}, True),
        ({"no_proxy": "example.com", "NO_PROXY": "caiso.com"}, False),  # lower case first
        ({"no_proxy": "", "NO_PROXY": "caiso.com"}, False),
        ({"NO_PROXY": "caiso.com:443"}, False),  # the server listens on 444
    ],
)
def test_no_proxy_variables_as_curl_reads_them(environ: dict[str, str], direct: bool) -> None:
    found = proxy_for(SERVER, {"HTTPS_PROXY": "http://proxy:3128", **environ})
    assert (found is None) is direct


def test_no_proxy_applies_to_the_option_too() -> None:
    """As in curl, NO_PROXY sends a listed host direct even when --proxy names a proxy."""
    assert proxy_for(SERVER, {"NO_PROXY": ".caiso.com"}, option="http://proxy:3128") is None


# --- the proxy URL --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "url", "user", "password"),
    [
        ("http://proxy.corp:3128", "http://proxy.corp:3128", None, None),
        ("proxy.corp:3128", "http://proxy.corp:3128", None, None),  # curl's default scheme
        ("http://proxy.corp", "http://proxy.corp:80", None, None),
        ("https://proxy.corp", "https://proxy.corp:443", None, None),
        ("HTTP://Proxy.Corp:3128/", "http://proxy.corp:3128", None, None),
        ("http://10.0.0.1:8080", "http://10.0.0.1:8080", None, None),
        ("http://[fd00::1]:3128", "http://[fd00::1]:3128", None, None),
        ("http://jo@proxy:3128", "http://proxy:3128", "jo", None),
        ("http://jo:pw@proxy:3128", "http://proxy:3128", "jo", "pw"),
        ("http://DOM%5Cjo:p%40ss%2Fw%3Ad@proxy:3128", "http://proxy:3128", "DOM\\jo", "p@ss/w:d"),
        # unencoded '@', '/', '#', '?' in the password: the host follows the last '@'
        ("http://jo:p@s/s#w?d@proxy:3128", "http://proxy:3128", "jo", "p@s/s#w?d"),
        ("http://jo:@proxy:3128", "http://proxy:3128", "jo", ""),
    ],
)
def test_proxy_urls_are_read_into_parts(
    raw: str, url: str, user: str | None, password: str | None
) -> None:
    proxy = parse_proxy_url(raw, "HTTPS_PROXY")
    assert (proxy.url, proxy.username, proxy.password) == (url, user, password)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("socks5://jo:Sekr1t@proxy:1080", "SOCKS proxies are not supported"),
        ("ftp://jo:Sekr1t@proxy:21", "starts with http:// or https://"),
        ("http://jo:Sekr1t@proxy:99999", "host or port is not valid"),
        ("http://jo:Sekr1t@proxy:port", "host or port is not valid"),
        ("http://jo:Sekr1t@:3128", "no host"),
        ("http://jo:Sekr1t@proxy:3128/path", "no path"),
        ("http://jo:Sekr1t@[fd00::1:3128", "host or port is not valid"),
        # the '@HOST' forgotten: the password stands where the port should
        ("http://jo:Sekr1t", "host or port is not valid"),
        ("jo:Sekr1t", "host or port is not valid"),
        ("http://jo:Sekr1t/", "host or port is not valid"),
        ("http://jo:Sekr1t:3128", "host or port is not valid"),
    ],
)
def test_a_bad_proxy_url_is_a_usage_error_that_never_quotes_the_password(
    raw: str, says: str
) -> None:
    with pytest.raises(UsageError) as caught:
        proxy_for(SERVER, {"HTTPS_PROXY": raw})
    assert says in str(caught.value) and "HTTPS_PROXY=" in str(caught.value)
    assert "Sekr1t" not in str(caught.value) and "jo" not in str(caught.value)


def test_a_proxy_url_without_its_host_keeps_the_password_out_of_the_message(
    offline_cli: Cli,
) -> None:
    """``http://USER:PASSWORD`` with the ``@HOST`` forgotten: exit 2, the password unprinted."""
    one = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-01-31"]
    done = offline_cli("fetch", *one, env={"HTTPS_PROXY": "http://jdoe:Winter2026pw"})
    assert done.exit_code == 2
    assert "HTTPS_PROXY=http://…" in done.stderr and "host or port is not valid" in done.stderr
    assert "Winter2026pw" not in done.stderr + done.stdout, done.stderr


def test_a_password_in_the_option_is_refused_but_a_user_name_is_not() -> None:
    with pytest.raises(UsageError) as caught:
        proxy_for(SERVER, {}, option="http://jo:Sekr1t@proxy:3128")
    assert "Sekr1t" not in str(caught.value) and "ps" in str(caught.value)
    found = proxy_for(SERVER, {}, option="http://jo@proxy:3128", credentials=lambda host: None)
    assert found is not None and found.username == "jo" and found.password is None


def test_the_password_stays_out_of_repr_str_and_settings() -> None:
    """Whatever prints a Proxy or the Settings holding one shows no password."""
    proxy = proxy_for(SERVER, {"HTTPS_PROXY": "http://jo:Sekr1t@proxy:3128"})
    assert proxy is not None and proxy.password == "Sekr1t"
    settings = Settings(plan=Plan([]), base_url=SERVER, proxy=proxy)
    for text in (repr(proxy), str(proxy), proxy.shown, proxy.url, repr(settings)):
        assert "Sekr1t" not in text
    assert str(proxy) == "http://jo@proxy:3128 (from HTTPS_PROXY)"
    assert proxy.authorization() == "Basic am86U2VrcjF0"  # base64("jo:Sekr1t")


# --- netrc ----------------------------------------------------------------------------------


def test_netrc_gives_credentials_for_the_proxy_host(tmp_path: Path) -> None:
    """As aiohttp reads it: NETRC names the file; its entry for the proxy's host, else its
    default; a user name in the URL must match the entry's."""
    netrc = tmp_path / "netrc"
    netrc.write_text(
        "machine proxy.corp login jo password Sekr1t\ndefault login anon password guest\n"
    )
    env = {"NETRC": str(netrc), "HTTPS_PROXY": "http://proxy.corp:3128"}
    found = proxy_for(SERVER, env)
    assert found is not None
    assert (found.username, found.password, found.credentials_from) == ("jo", "Sekr1t", str(netrc))
    other = proxy_for(SERVER, {**env, "HTTPS_PROXY": "http://other:3128"})
    assert other is not None and (other.username, other.password) == ("anon", "guest")
    mismatch = proxy_for(SERVER, {**env, "HTTPS_PROXY": "http://kim@proxy.corp:3128"})
    assert mismatch is not None and (mismatch.username, mismatch.password) == ("kim", None)
    in_url = proxy_for(SERVER, {**env, "HTTPS_PROXY": "http://kim:pw@proxy.corp:3128"})
    assert in_url is not None and (in_url.username, in_url.password) == ("kim", "pw")
    assert in_url.credentials_from == "the URL"


def test_a_missing_netrc_is_no_error_and_a_broken_one_is_named_without_its_content(
    tmp_path: Path,
) -> None:
    env = {"NETRC": str(tmp_path / "absent"), "HTTPS_PROXY": "http://proxy.corp:3128"}
    found = proxy_for(SERVER, env)
    assert found is not None and found.username is None
    broken = tmp_path / "netrc"
    broken.write_text("machine proxy.corp login jo password Sekr1t bogus-token\n")
    with pytest.raises(UsageError) as caught:
        proxy_for(SERVER, {**env, "NETRC": str(broken)})
    assert str(broken) in str(caught.value) and "Sekr1t" not in str(caught.value)


def test_a_netrc_others_can_read_is_warned_about_when_it_gives_the_proxy_password(
    offline_cli: Cli, tmp_path: Path
) -> None:
    """As for the certificate's file: a netrc readable by others is named, with the fix."""
    with socket.socket() as probe:  # a port nothing listens on: the run ends at the proxy
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login jo password Sekr1t\n")
    env = {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "NETRC": str(netrc)}
    one = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-01-31", "--retries", "0"]
    warning = (
        f"{netrc} gives the password for the proxy http://jo@127.0.0.1:{port} and is 0644:"
        f" its group and every user can read it; chmod 600 {netrc}"
    )
    netrc.chmod(0o644)
    done = offline_cli("fetch", *one, env=env)
    assert warning in done.stderr and "Sekr1t" not in done.stderr, done.stderr
    netrc.chmod(0o600)
    done = offline_cli("fetch", *one, env=env)
    assert "chmod" not in done.stderr and "cannot reach the proxy" in done.stderr, done.stderr


# --- what the proxy's answers mean ----------------------------------------------------------

PROXY = Proxy("http", "proxy.corp", 3128, "jo", "Sekr1t", "HTTPS_PROXY", "the URL")


def _proxy_answer(status: int, reason: str) -> aiohttp.ClientHttpProxyError:
    """What aiohttp raises when the proxy answers CONNECT with ``status``; its request info
    carries the Proxy-Authorization header, as aiohttp's does."""
    headers = CIMultiDictProxy(CIMultiDict({"Proxy-Authorization": PROXY.authorization() or ""}))
    info = RequestInfo(URL(SERVER), "CONNECT", headers, URL(SERVER))
    return aiohttp.ClientHttpProxyError(info, (), status=status, message=reason)


def _connector_error(
    cls: type[aiohttp.ClientConnectorError], host: str, port: int
) -> aiohttp.ClientConnectorError:
    key = ConnectionKey(host, port, False, True, None, None, None)
    return cls(key, ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize(
    ("exc", "kind", "says"),
    [
        (_proxy_answer(407, "Proxy Authentication Required"), ProxyAuthError, "407"),
        (_proxy_answer(403, "Forbidden"), ProxyError, "403 Forbidden"),
        (_proxy_answer(405, "Method Not Allowed"), ProxyError, "405"),
        (_proxy_answer(502, "Bad Gateway"), RetryableError, "could not reach"),
        (_proxy_answer(503, "Service Unavailable"), RetryableError, "could not reach"),
        (
            _connector_error(aiohttp.ClientProxyConnectionError, "proxy.corp", 3128),
            ProxyError,
            "cannot reach the proxy",
        ),
        # a proxy name that does not resolve arrives as a plain connector error
        (
            _connector_error(aiohttp.ClientConnectorDNSError, "proxy.corp", 3128),
            ProxyError,
            "cannot reach the proxy",
        ),
        (aiohttp.ServerDisconnectedError(), ConnectionDropped, "through the proxy"),
    ],
)
def test_the_proxys_answers_are_classified(
    exc: BaseException, kind: type[Exception], says: str
) -> None:
    """407 stops the run (exit 3); a proxy not reached or refusing the tunnel ends it
    (exit 1); a 5xx on CONNECT and a cut tunnel are retried. No message holds the password."""
    verdict = classify_client_error(exc, 10, proxy=PROXY)
    assert type(verdict) is kind
    assert says in str(verdict)
    assert "Sekr1t" not in str(verdict) and "am86U2VrcjF0" not in str(verdict)
    assert "http://jo@proxy.corp:3128" in str(verdict) or kind is ConnectionDropped
    assert "Sekr1t" not in repr(pickle.loads(pickle.dumps(verdict)))


@pytest.mark.parametrize(
    ("challenges", "refused", "bridge"),
    [
        ((), True, False),
        (('Basic realm="corp"',), True, False),
        (("NTLM", 'Basic realm="corp"'), True, False),
        (("NTLM",), False, True),
        (("Negotiate", "NTLM"), False, True),
        (('Digest realm="corp", nonce="x"',), False, False),
    ],
)
def test_a_407_says_what_would_work(
    challenges: tuple[str, ...], refused: bool, bridge: bool
) -> None:
    """Basic offered: our credentials were refused. NTLM or Negotiate only: a local bridge.
    Anything else only (Digest): omar-bulk cannot answer it at all."""
    message = auth_refused(PROXY, "407 Proxy Authentication Required", challenges)
    assert ("were refused" in message) is refused
    assert ("cntlm or px on 127.0.0.1" in message) is bridge
    assert ("Basic access" in message) is (not refused and not bridge)
    assert "Sekr1t" not in message


def test_without_a_proxy_nothing_is_blamed_on_one() -> None:
    refused = _connector_error(aiohttp.ClientConnectorError, "omar.example", 444)
    verdict = classify_client_error(refused, 10)
    assert type(verdict) is RetryableError and "proxy" not in str(verdict)
    assert "proxy" not in str(classify_client_error(aiohttp.ServerDisconnectedError(), 10))


def test_exit_codes_of_the_proxy_errors() -> None:
    assert ProxyAuthError("x").exit_code == 3 and isinstance(ProxyAuthError("x"), AuthError)
    assert ProxyError("x").exit_code == 1
