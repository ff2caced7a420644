"""parfive on a URL list, with an aiohttp session carrying the client certificate.

Usage: parfive_client.py URLS.json CONCURRENCY CERT.pem CA.pem [COOKIE]
URLS.json holds [[url, folder, filename], ...]. Exit 0 only if every file arrived.
"""

from __future__ import annotations

import json
import ssl
import sys

import aiohttp
from parfive import Downloader, SessionConfig


def main() -> int:
    urls_file, concurrency, cert, ca = sys.argv[1:5]
    cookie = sys.argv[5] if len(sys.argv) > 5 else None
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert)
    headers = {"Cookie": cookie} if cookie else {}

    def session(config: SessionConfig) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
        )

    downloader = Downloader(
        max_conn=int(concurrency),
        max_splits=1,  # one connection per file, like the other tools
        progress=False,
        overwrite=True,
        config=SessionConfig(aiohttp_session_generator=session, file_progress=False),
    )
    with open(urls_file) as handle:
        for url, folder, name in json.load(handle):
            downloader.enqueue_file(url, path=folder, filename=name)
    results = downloader.download()
    if results.errors:
        print(f"parfive: {len(results.errors)} errors, first: {results.errors[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
