"""Runs through a real forward proxy on loopback: proxy.py with Basic authentication, and a tiny
CONNECT proxy for refusals and cut tunnels. The stand-in is the server behind them.

The proxy's access log proves the tunnels went through it; the stand-in's log proves what
arrived. The password is chosen to need percent-encoding and is looked for, with its Basic
form, in every output and every file a run leaves.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest

from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import Faults, ServerThread, serve_in_thread

from ..conftest import Cli, data_files, expected_body, journal_rows
from ..forward_proxy import ProxyPy, TinyProxy, proxy_py

USER = "meter-reader"
PASSWORD = "Pr0xy/s3cret#?@x"  # '/', '#', '?' and '@' must be percent-encoded in a URL
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())

MONTHS = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


@pytest.fixture(scope="module")
def auth_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyPy]:
    """proxy.py asking for Basic credentials, shared by this module's tests."""
    with proxy_py(tmp_path_factory.mktemp("proxy"), user=USER, password=PASSWORD) as running:
        yield running


def only_the_proxy_resolves(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """From now on this process cannot look up any address on ``port``: a direct connection
    to the server fails, one through the proxy (which resolves the name itself) does not."""
    guarded = socket.getaddrinfo

    def refuse(host, service, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(service) == str(port):
            raise socket.gaierror(socket.EAI_NONAME, f"only the proxy may reach port {port}")
        return guarded(host, service, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def secret_free(*texts: str, folder: Path | None = None) -> None:
    """Neither the password nor its Basic form is in ``texts`` or any file under ``folder``."""
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
    if folder is not None:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for secret in SECRETS:
                    assert secret.encode() not in data, path


def test_a_run_through_an_authenticating_proxy_is_byte_exact(
    cli: Cli,
    server: ServerThread,
    auth_proxy: ProxyPy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY with percent-encoded credentials: every request tunnels through the proxy
    (its log counts the CONNECTs), the files are the server's bytes, and the password appears
    nowhere, not in the output, report, journal or metrics. This process cannot even resolve
    the server's name: only the proxy can reach it."""
    only_the_proxy_resolves(monkeypatch, server.port)
    metrics = tmp_path / "run.prom"
    done = cli(
        "fetch",
        *MONTHS,
        "--base-url",
        f"https://localhost:{server.port}/",
        "--metrics",
        str(metrics),
        env={"HTTPS_PROXY": auth_proxy.url(user=USER, password=PASSWORD)},
    )
    assert done.exit_code == 0, done.stderr
    assert f"through the proxy http://{USER}@127.0.0.1:{auth_proxy.port}" in done.stderr
    files = data_files(cli.out)
    assert len(files) == 3
    for path, (start, end) in zip(
        files,
        [
            (date(2024, 1, 1), date(2024, 1, 31)),
            (date(2024, 2, 1), date(2024, 2, 29)),
            (date(2024, 3, 1), date(2024, 3, 31)),
        ],
        strict=True,
    ):
        assert path.read_bytes() == expected_body("meter", "M1", start, end)
    assert len(server.state.downloads()) == 3
    assert f"localhost:{server.port}" in auth_proxy.connects()
    assert all(status == "downloaded" for status, _, _ in journal_rows(cli.out).values())
    secret_free(done.stdout, done.stderr, folder=cli.out)
    secret_free(metrics.read_text())
    # and the same run without the proxy cannot reach the server from here
    direct = cli(
        "fetch",
        *MONTHS,
        "--base-url",
        f"https://localhost:{server.port}/",
        "--no-proxy",
        "--overwrite",
        "--retries",
        "0",
    )
    assert direct.exit_code == 1 and "only the proxy may reach" in direct.stderr


def test_the_lower_case_variable_is_honoured_and_wins(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy
) -> None:
    """https_proxy, as curl reads it first: it wins over an HTTPS_PROXY that points nowhere."""
    done = cli(
        "fetch",
        *MONTHS,
        env={
            "https_proxy": auth_proxy.url(user=USER, password=PASSWORD),
            "HTTPS_PROXY": "http://127.0.0.1:9",
        },
    )
    assert done.exit_code == 0, done.stderr
    assert "(from https_proxy)" in done.stderr
    assert auth_proxy.tunnels_to(server.port) >= 1
    assert len(data_files(cli.out)) == 3


def test_all_proxy_is_used_when_no_https_proxy_is_set(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy
) -> None:
    """ALL_PROXY, curl's last resort (aiohttp's trust_env ignores it)."""
    done = cli("fetch", *MONTHS, env={"ALL_PROXY": auth_proxy.url(user=USER, password=PASSWORD)})
    assert done.exit_code == 0, done.stderr
    assert auth_proxy.tunnels_to(server.port) >= 1


def test_no_proxy_sends_the_server_direct(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy
) -> None:
    """NO_PROXY naming another host leaves the proxy in use; naming the server's address
    (with its port) sends the next run direct: no new tunnel, and the run works."""
    proxied = {"HTTPS_PROXY": auth_proxy.url(user=USER, password=PASSWORD)}
    first = cli("fetch", *MONTHS, env={**proxied, "NO_PROXY": "example.com"})
    assert first.exit_code == 0, first.stderr
    tunnels = auth_proxy.settled_tunnels(server.port)
    assert tunnels >= 1
    done = cli(
        "fetch",
        *MONTHS,
        "--overwrite",
        env={**proxied, "NO_PROXY": f"example.com, 127.0.0.1:{server.port}"},
    )
    assert done.exit_code == 0, done.stderr
    assert "through the proxy" not in done.stderr
    assert len(server.state.downloads()) == 6
    assert auth_proxy.settled_tunnels(server.port) == tunnels


def test_no_proxy_for_another_port_still_goes_through_the_proxy(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy
) -> None:
    """A NO_PROXY entry with another port does not match the server."""
    done = cli(
        "fetch",
        *MONTHS,
        env={
            "HTTPS_PROXY": auth_proxy.url(user=USER, password=PASSWORD),
            "NO_PROXY": f"127.0.0.1:{server.port + 1}",
        },
    )
    assert done.exit_code == 0, done.stderr
    assert auth_proxy.tunnels_to(server.port) >= 1


def test_the_proxy_option_with_credentials_from_netrc(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy, tmp_path: Path
) -> None:
    """--proxy without a password takes it from the netrc file, as aiohttp would; the option
    overrides the environment's proxy."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    done = cli(
        "fetch",
        *MONTHS,
        "--proxy",
        auth_proxy.url(user=USER),
        env={"NETRC": str(netrc), "HTTPS_PROXY": "http://127.0.0.1:9"},
    )
    assert done.exit_code == 0, done.stderr
    assert "(from --proxy)" in done.stderr
    assert auth_proxy.tunnels_to(server.port) >= 1
    secret_free(done.stdout, done.stderr, folder=cli.out)


def test_no_proxy_option_goes_direct_whatever_the_environment_says(
    cli: Cli, server: ServerThread
) -> None:
    """--no-proxy and --proxy '' both ignore an HTTPS_PROXY that points nowhere."""
    for flag in (["--no-proxy"], ["--proxy", ""]):
        done = cli("fetch", *MONTHS, *flag, env={"HTTPS_PROXY": "http://127.0.0.1:9"})
        assert done.exit_code == 0, (flag, done.stderr)
    assert len(data_files(cli.out)) == 3


def test_a_password_in_the_proxy_option_is_refused(offline_cli: Cli) -> None:
    """The command line shows in ps: exit 2 before anything is sent, and the message says to
    use the environment, without repeating the password."""
    done = offline_cli(
        "fetch",
        *MONTHS,
        "--base-url",
        "https://127.0.0.1:1/",
        "--proxy",
        f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:3128",
    )
    assert done.exit_code == 2
    assert "HTTPS_PROXY" in done.stderr and "ps" in done.stderr
    assert "%2F" not in done.stderr
    secret_free(done.stdout, done.stderr)


def test_a_wrong_proxy_password_stops_at_once_with_exit_3(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy, tmp_path: Path
) -> None:
    """407: exit 3 at the first attempt, naming the proxy and the user but not the password;
    the server never hears of it, and nothing is retried."""
    report = tmp_path / "r.json"
    started = time.monotonic()
    done = cli(
        "fetch",
        *MONTHS,
        "--retries",
        "5",
        "--retry-wait",
        "1",
        "--report",
        str(report),
        env={"HTTPS_PROXY": auth_proxy.url(user=USER, password="wrong-" + PASSWORD)},
    )
    assert done.exit_code == 3, done.stderr
    assert time.monotonic() - started < 5  # one backoff wait alone would be 1 s or more
    assert "407" in done.stderr and f"{USER}@127.0.0.1:{auth_proxy.port}" in done.stderr
    assert "retrying" not in done.stderr
    assert server.state.logins == 0 and not server.state.downloads()
    secret_free(done.stdout, done.stderr, folder=cli.out)
    assert "wrong-" not in done.stderr


def test_no_credentials_for_an_authenticating_proxy_says_how_to_give_them(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy
) -> None:
    done = cli("fetch", *MONTHS, env={"HTTPS_PROXY": auth_proxy.url()})
    assert done.exit_code == 3
    assert "no credentials were given" in done.stderr and "netrc" in done.stderr


def test_a_proxy_that_wants_ntlm_or_kerberos_is_named_with_the_bridge_to_use(
    cli: Cli, server: ServerThread
) -> None:
    """A 407 offering only NTLM and Negotiate: no credentials could help; fetch and check
    both say so and point to a local bridge (exit 3)."""
    challenges = ("Proxy-Authenticate: NTLM", "Proxy-Authenticate: Negotiate")
    with TinyProxy(status=407, reason="Proxy Authentication Required", headers=challenges) as ntlm:
        done = cli("fetch", *MONTHS, env={"HTTPS_PROXY": f"http://jo:pw@127.0.0.1:{ntlm.port}"})
        code, report = check_json(
            cli, server, env={"HTTPS_PROXY": f"http://jo:pw@127.0.0.1:{ntlm.port}"}
        )
    assert done.exit_code == 3 and code == 3
    for said in (done.stderr, steps(report)["proxy"][1]):
        assert "by NTLM, Negotiate only" in said and "cntlm or px" in said


def test_a_proxy_that_is_down_ends_the_run_at_once_with_exit_1(
    cli: Cli, server: ServerThread
) -> None:
    """Nothing listens at the proxy's address: exit 1 without retries, naming the proxy."""
    with TinyProxy() as gone:
        address = gone.url
    started = time.monotonic()
    done = cli("fetch", *MONTHS, "--retry-wait", "1", env={"HTTPS_PROXY": address})
    assert done.exit_code == 1, done.stderr
    assert time.monotonic() - started < 5
    assert f"cannot reach the proxy {address}" in done.stderr and "--no-proxy" in done.stderr
    assert "retrying" not in done.stderr
    assert server.state.logins == 0


#: Far above the ``--timeout 1`` given: a run still going then has hung.
HANG_DEADLINE = 30.0


@pytest.fixture
def silent_proxy() -> Iterator[str]:
    """A listening socket that never accepts: the kernel completes the TCP handshake, the
    CONNECT lands in the backlog and nothing ever answers it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_proxy_that_never_answers_connect_is_bounded_by_timeout(
    server: ServerThread, pki: TestPKI, tmp_path: Path, silent_proxy: str
) -> None:
    """A proxy silent after CONNECT ends the run within ``--timeout``: exit 1, proxy named."""
    args = [sys.executable, "-m", "omar_bulk", "fetch", *MONTHS, "--out", str(tmp_path / "out")]
    args += ["--base-url", server.base_url, "--cert", str(pki.client_p12)]
    args += ["--ca-bundle", str(pki.ca), "--timeout", "1", "--retries", "0"]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({"HTTPS_PROXY": silent_proxy, "OMAR_CERT_PASSWORD": DEMO_PASSWORD})
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = process.communicate(timeout=HANG_DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=10)
        pytest.fail(f"fetch through a silent proxy with --timeout 1 ran past {HANG_DEADLINE} s")
    assert process.returncode == 1, err.decode()
    assert f"no connection through the proxy {silent_proxy}" in err.decode()
    assert "did not answer our CONNECT" in err.decode()
    assert server.state.logins == 0


def test_a_proxy_that_refuses_the_tunnel_says_so_with_its_status(
    cli: Cli, server: ServerThread
) -> None:
    """403 to CONNECT (Squid's answer for a port outside its SSL_ports): exit 1 at once, the
    proxy's status quoted, and the port named for its administrators."""
    with TinyProxy(status=403, reason="Forbidden") as refusing:
        started = time.monotonic()
        done = cli("fetch", *MONTHS, "--retry-wait", "1", env={"HTTPS_PROXY": refusing.url})
        assert refusing.requests == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"]
    assert done.exit_code == 1, done.stderr
    assert time.monotonic() - started < 5
    assert "403 Forbidden" in done.stderr and f"127.0.0.1:{server.port}" in done.stderr
    assert "port 443" in done.stderr
    assert server.state.logins == 0


#: Proxies that answer, but not with a tunnel: what the answer is, and what must be said.
ODD_ANSWERS = {
    "not HTTP": (
        {"garbage": b"SSH-2.0-OpenSSH_9.6\r\n\r\n"},
        "http",
        ["answered CONNECT with something that is not HTTP", "SSH-2.0-OpenSSH_9.6"],
    ),
    "captive portal": (
        {"status": 302, "reason": "Found", "headers": ("Location: http://portal.example/in",)},
        "http",
        ["with a redirect (302 Found to http://portal.example/in)", "captive portal"],
    ),
    "https:// to a plain proxy": (
        {"garbage": b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"},
        "https",
        ["no TLS session with the proxy", "write http:// instead of https://"],
    ),
}


@pytest.mark.parametrize("case", list(ODD_ANSWERS))
def test_a_proxy_that_answers_connect_oddly_is_named_with_what_it_said(
    cli: Cli, server: ServerThread, case: str
) -> None:
    """Not HTTP, a portal's redirect, no TLS: exit 1 at once, the proxy and cause named."""
    behaviour, scheme, says = ODD_ANSWERS[case]
    with TinyProxy(**behaviour) as odd:  # type: ignore[arg-type]
        address = odd.url.replace("http://", f"{scheme}://")
        done = cli("fetch", *MONTHS, env={"HTTPS_PROXY": address})
        code, report = check_json(cli, server, env={"HTTPS_PROXY": address})
    reason = steps(report)["proxy"][1]
    assert done.exit_code == 1 and code == 1, done.stderr
    for text in (done.stderr, reason):
        assert f"proxy {address}" in text and all(s in text for s in says), text
        assert "port 443" not in text and "server's answer" not in text
    assert "retrying" not in done.stderr and server.state.logins == 0


def test_tunnels_the_proxy_cuts_are_retried_as_dropped_connections(
    cli: Cli, server: ServerThread
) -> None:
    """The proxy accepts CONNECT, then closes the first two tunnels at the TLS handshake: each
    is retried like a connection the server dropped, and the run completes."""
    with TinyProxy(cut=2) as cutting:
        done = cli("fetch", *MONTHS, env={"HTTPS_PROXY": cutting.url})
        tunnels = len(cutting.requests)
    assert done.exit_code == 0, done.stderr
    assert "retrying" in done.stderr
    assert "the connection" in done.stderr
    assert f", through the proxy {cutting.url}); retrying" in done.stderr
    assert tunnels >= 3 and len(data_files(cli.out)) == 3


def test_a_proxy_that_cuts_every_tunnel_ends_as_unreachable_not_as_a_refused_certificate(
    cli: Cli, server: ServerThread
) -> None:
    """Every tunnel cut during TLS: retried, then exit 1 naming the proxy's rules, not --cert."""
    with TinyProxy(cut=1000) as cutting:
        done = cli("fetch", *MONTHS, "--retries", "2", env={"HTTPS_PROXY": cutting.url})
        tunnels = len(cutting.requests)
    assert done.exit_code == 1, done.stderr
    assert tunnels == 3 and server.state.logins == 0
    assert "right after the TLS handshake" not in done.stderr and "--cert" not in done.stderr
    assert f"the proxy {cutting.url} (from HTTPS_PROXY) allowed the tunnel" in done.stderr


@pytest.fixture
def expiring(pki: TestPKI) -> Iterator[ServerThread]:
    """A stand-in whose sessions expire every 4 downloads, with a 503 storm at the start."""
    faults = Faults(retry_after=0, session_requests=4, latency=0.02, storm=16)
    with serve_in_thread(pki, faults) as running:
        yield running


def test_session_renewal_and_the_adaptive_pool_work_through_the_proxy(
    pki: TestPKI, expiring: ServerThread, auth_proxy: ProxyPy, tmp_path: Path
) -> None:
    """Through the authenticating proxy, sessions are renewed once per expiry and the pool
    narrows under push-back and widens again, as on a direct connection."""
    cli = Cli(pki, tmp_path / "out", expiring)
    report = tmp_path / "r.json"
    done = cli(
        "fetch",
        *[a for n in range(3) for a in ("--meter", f"M{n}")],
        "--start",
        "2023-01-01",
        "--end",
        "2023-12-31",
        "--concurrency",
        "8",
        "--retries",
        "10",
        "--report",
        str(report),
        env={"HTTPS_PROXY": auth_proxy.url(user=USER, password=PASSWORD)},
    )
    assert done.exit_code == 0, done.stderr
    state = expiring.state
    served = [s for s in state.downloads() if s.fault is None]
    assert len(served) == 36 and len(data_files(cli.out)) == 36
    assert 9 <= state.logins <= 36 // 4 + 3, state.logins
    pool = json.loads(report.read_text())["summary"]["concurrency"]
    assert pool["lowest"] <= 4 and pool["decreases"] >= 1 and pool["increases"] >= 1
    assert auth_proxy.tunnels_to(expiring.port) >= 1
    secret_free(done.stdout, done.stderr, report.read_text(), folder=cli.out)


def test_an_https_proxy_carries_tls_inside_tls(
    cli: Cli, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """An https:// proxy (TLS to the proxy, then the server's TLS inside the tunnel), its
    certificate verified with --ca-bundle like the server's. Python 3.11 and later can."""
    tls = (pki.server, pki.server)  # the file holds the loopback certificate and its key
    with proxy_py(tmp_path / "tls-proxy", user=USER, password=PASSWORD, tls=tls) as secure:
        address = secure.url(user=USER, password=PASSWORD).replace("http://", "https://")
        done = cli("fetch", *MONTHS, env={"HTTPS_PROXY": address})
        assert done.exit_code == 0, done.stderr
        assert f"through the proxy https://{USER}@127.0.0.1:{secure.port}" in done.stderr
        assert secure.tunnels_to(server.port) >= 1
    assert len(data_files(cli.out)) == 3


def test_an_https_proxy_whose_certificate_does_not_verify_stops_with_exit_3(
    cli: Cli, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """TLS to the proxy is verified like TLS to the server: a certificate from a CA not given
    stops the run, naming the proxy, before the server is contacted."""
    stranger = TestPKI.create(tmp_path / "other-pki")
    tls = (stranger.server, stranger.server)
    with proxy_py(tmp_path / "tls-proxy", tls=tls) as secure:
        address = secure.url().replace("http://", "https://")
        done = cli("fetch", *MONTHS, env={"HTTPS_PROXY": address})
    assert done.exit_code == 3, done.stderr
    assert f"the certificate of the proxy {address}" in done.stderr
    assert "--ca-bundle" in done.stderr
    assert server.state.logins == 0


# --- omar-bulk check through a proxy ------------------------------------------------------


def check_json(cli: Cli, server: ServerThread, *more: str, env: dict[str, str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    done = cli(
        "check",
        "--base-url",
        server.base_url,
        "--cert",
        str(cli.pki.client_p12),
        "--ca-bundle",
        str(cli.pki.ca),
        "--json",
        *more,
        env=env,
    )
    secret_free(done.stdout, done.stderr)
    return done.exit_code, json.loads(done.stdout)


def steps(report: dict) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    return {c["name"]: (c["verdict"], c["reason"]) for c in report["checks"]}


def test_check_goes_through_the_proxy_and_says_so(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy
) -> None:
    """A proxy step (reached, CONNECT allowed, authenticated) before TLS; the TCP step names
    the proxy; every server step then passes inside the tunnel; the proxy logged it."""
    code, report = check_json(
        cli, server, env={"HTTPS_PROXY": auth_proxy.url(user=USER, password=PASSWORD)}
    )
    assert code == 0, report
    names = [c["name"] for c in report["checks"]]
    assert names.index("TCP") < names.index("proxy") < names.index("TLS")
    found = steps(report)
    assert found["TCP"][0] == "ok" and f"the proxy http://{USER}@127.0.0.1" in found["TCP"][1]
    assert "reached through it" in found["TCP"][1]
    verdict, reason = found["proxy"]
    assert verdict == "ok" and f"CONNECT 127.0.0.1:{server.port} allowed" in reason
    assert f"authenticated as {USER}" in reason
    assert all(found[n][0] == "ok" for n in ("TLS", "server certificate", "our certificate"))
    assert server.state.logins == 1
    assert auth_proxy.tunnels_to(server.port) >= 1


def test_check_reports_a_wrong_proxy_password_as_exit_3(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy
) -> None:
    code, report = check_json(
        cli, server, env={"HTTPS_PROXY": auth_proxy.url(user=USER, password="not-it")}
    )
    assert code == 3
    found = steps(report)
    assert found["proxy"][0] == "fail" and "407" in found["proxy"][1]
    assert found["TLS"][0] == "skip" and server.state.logins == 0


def test_check_reports_a_refused_tunnel_and_a_proxy_that_is_down_as_exit_1(
    cli: Cli, server: ServerThread
) -> None:
    with TinyProxy(status=403, reason="Forbidden") as refusing:
        code, report = check_json(cli, server, env={"HTTPS_PROXY": refusing.url})
    assert code == 1
    found = steps(report)
    assert found["TCP"][0] == "ok"
    assert found["proxy"][0] == "fail" and "403 Forbidden" in found["proxy"][1]
    assert "port 443" in found["proxy"][1]
    # the proxy is gone now: nothing listens at its address
    code, report = check_json(cli, server, env={"HTTPS_PROXY": refusing.url})
    assert code == 1
    found = steps(report)
    assert found["TCP"][0] == "fail" and "cannot reach the proxy" in found["TCP"][1]
    assert found["proxy"][0] == "skip"


def test_check_with_a_proxy_that_cuts_every_tunnel_fails_tls_with_exit_1(
    cli: Cli, server: ServerThread
) -> None:
    """A tunnel cut during TLS fails check's TLS step with exit 1, not our certificate."""
    with TinyProxy(cut=1000) as cutting:
        code, report = check_json(cli, server, env={"HTTPS_PROXY": cutting.url})
    assert code == 1, report
    verdict, reason = steps(report)["TLS"]
    assert verdict == "fail" and "allowed the tunnel" in reason, reason
    assert "client certificate" not in reason and steps(report)["our certificate"][0] == "skip"


def test_check_with_a_proxy_that_never_answers_connect_says_so_within_timeout(
    cli: Cli, server: ServerThread, silent_proxy: str
) -> None:
    """TCP reaches the proxy; its silence to CONNECT is named as such, not "cannot reach"."""
    code, report = check_json(cli, server, "--timeout", "1", env={"HTTPS_PROXY": silent_proxy})
    found = steps(report)
    assert code == 1 and found["TCP"][0] == "ok", found
    assert found["proxy"] == (
        "fail",
        f"the proxy {silent_proxy} (from HTTPS_PROXY) did not answer CONNECT"
        f" 127.0.0.1:{server.port} within 1 s; check that its host and port are those of an"
        " HTTP proxy, or go direct with --no-proxy if this network allows it",
    )


def test_check_with_no_proxy_goes_direct(
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy
) -> None:
    code, report = check_json(
        cli, server, "--no-proxy", env={"HTTPS_PROXY": auth_proxy.url(user=USER, password="x")}
    )
    assert code == 0
    assert "proxy" not in steps(report)
    assert steps(report)["TCP"][1].startswith("connected to 127.0.0.1")


def test_check_through_an_https_proxy_runs_tls_inside_its_tls(
    cli: Cli, server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """TLS to the proxy, CONNECT, then the server's TLS inside the proxy's: every step passes,
    as fetch's would."""
    tls = (pki.server, pki.server)
    with proxy_py(tmp_path / "tls-proxy", user=USER, password=PASSWORD, tls=tls) as secure:
        address = secure.url(user=USER, password=PASSWORD).replace("http://", "https://")
        code, report = check_json(cli, server, env={"HTTPS_PROXY": address})
        assert secure.tunnels_to(server.port) >= 1
    assert code == 0, report
    found = steps(report)
    assert found["proxy"][0] == "ok" and f"authenticated as {USER}" in found["proxy"][1]
    assert found["TCP"][1].startswith(f"connected to the proxy https://{USER}@127.0.0.1")
    for name in ("TLS", "server certificate", "our certificate", "session"):
        assert found[name][0] == "ok", (name, found[name])
    assert server.state.logins == 1


def test_checks_second_connection_through_an_https_proxy_is_tunnelled_too(
    server: ServerThread, pki: TestPKI, tmp_path: Path
) -> None:
    """When the server closes a connection during the login's redirects, check opens another:
    through an https:// proxy that one also runs TLS to the proxy, CONNECT, then TLS inside."""
    from urllib.parse import urlsplit

    from omar_bulk.check import _connection
    from omar_bulk.proxy import parse_proxy_url
    from omar_bulk.standin.certs import DEMO_PASSWORD
    from omar_bulk.tls import create_ssl_context, load_identity

    identity = load_identity(pki.client_p12, password=lambda what: DEMO_PASSWORD)
    context = create_ssl_context(identity, ca_bundle=pki.ca)
    tls = (pki.server, pki.server)
    with proxy_py(tmp_path / "tls-proxy", user=USER, password=PASSWORD, tls=tls) as secure:
        address = secure.url(user=USER, password=PASSWORD).replace("http://", "https://")
        proxy = parse_proxy_url(address, "HTTPS_PROXY")
        connection = _connection(urlsplit(server.base_url), context, 10, proxy)
        try:
            connection.request("GET", "/")
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
        assert secure.tunnels_to(server.port) >= 1
    assert answer.status == 200 and body
    assert server.state.logins == 1
