"""Proxies and TLS servers that misbehave in ways the documentation covers, and what omar-bulk
should say about them: a proxy that never answers CONNECT (``--timeout`` bounds every silence),
a proxy that accepts CONNECT and closes every tunnel (retried like a dropped connection, exit 1),
a proxy URL whose host was forgotten (the password stays out of the message), and ``check``
against a server that offers only TLS 1.1 (the protocol is named, not our certificate).
"""

from __future__ import annotations

import json

import pytest

from omar_bulk.standin.certs import TestPKI

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


@pytest.mark.parametrize(
    "openssl_server", [["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]], indirect=True
)
def test_check_against_a_tls_1_1_server_names_the_protocol_not_our_certificate(
    offline_cli: Cli,
    pki: TestPKI,
    openssl_server: str,  # noqa: F811
) -> None:
    """``fetch`` says the server offers no TLS version omar-bulk accepts; ``check`` marks TLS
    good and then says the server refused our certificate, sending the user to --cert."""
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
    verdicts = {c["name"]: (c["verdict"], c["reason"]) for c in report["checks"]}
    assert verdicts["TLS"][0] == "fail", verdicts["TLS"]
    assert "1.2 or newer" in verdicts["TLS"][1]
    assert verdicts["our certificate"][0] != "fail", verdicts["our certificate"]
