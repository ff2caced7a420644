"""Runs through a real forward proxy on loopback: proxy.py with Basic authentication, and a tiny
CONNECT proxy for refusals and cut tunnels. The stand-in is the server behind them.

The proxy's access log proves the tunnels went through it; the stand-in's log proves what
arrived. The password is chosen to need percent-encoding and is looked for, with its Basic
form, in every output and every file a run leaves.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from omar_bulk.standin.certs import TestPKI
from omar_bulk.standin.server import Faults, ServerThread, serve_in_thread

from .conftest import Cli, data_files, expected_body, journal_rows
from .forward_proxy import ProxyPy, TinyProxy, proxy_py

USER = "meter-reader"
PASSWORD = "Pr0xy/s3cret#?@x"  # '/', '#', '?' and '@' must be percent-encoded in a URL
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())

MONTHS = ["--meter", "M1", "--start", "2024-01-01", "--end", "2024-03-31"]


@pytest.fixture(scope="module")
def auth_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyPy]:
    """proxy.py asking for Basic credentials, shared by this module's tests."""
    with proxy_py(tmp_path_factory.mktemp("proxy"), user=USER, password=PASSWORD) as running:
        yield running


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
    cli: Cli, server: ServerThread, auth_proxy: ProxyPy, tmp_path: Path
) -> None:
    """HTTPS_PROXY with percent-encoded credentials: every request tunnels through the proxy
    (its log counts the CONNECTs), the files are the server's bytes, and the password appears
    nowhere, not in the output, report, journal or metrics."""
    before = len(auth_proxy.connects())
    metrics = tmp_path / "run.prom"
    done = cli(
        "fetch",
        *MONTHS,
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
    assert auth_proxy.tunnels_to(server.port, at_least=before + 1) > before
    assert all(status == "downloaded" for status, _, _ in journal_rows(cli.out).values())
    secret_free(done.stdout, done.stderr, folder=cli.out)
    secret_free(metrics.read_text())
