"""Proxies and TLS servers that misbehave in ways the documentation covers, and what omar-bulk
should say about them: a proxy that never answers CONNECT (``--timeout`` bounds every silence),
a proxy that accepts CONNECT and closes every tunnel (retried like a dropped connection, exit 1),
a proxy URL whose host was forgotten (the password stays out of the message), and ``check``
against a server that offers only TLS 1.1 (the protocol is named, not our certificate).
"""

from __future__ import annotations

from .conftest import Cli
from .test_tls import openssl_server  # noqa: F401 (a fixture)

ONE = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-01-31"]
#: Far above the ``--timeout 1`` given; a run that is still going then has hung.
DEADLINE = 30.0


def test_a_proxy_url_without_its_host_keeps_the_password_out_of_the_message(
    offline_cli: Cli,
) -> None:
    """``http://USER:PASSWORD`` with the ``@HOST`` forgotten is refused (exit 2), but the
    message must not print what is plainly a password."""
    done = offline_cli("fetch", *ONE, env={"HTTPS_PROXY": "http://jdoe:Winter2026pw"})
    assert done.exit_code == 2
    assert "Winter2026pw" not in done.stderr + done.stdout, done.stderr
