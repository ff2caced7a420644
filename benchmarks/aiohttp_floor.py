"""Workload 3's floor: what Python and aiohttp cost on one large TLS body, without omar-bulk.

Usage: aiohttp_floor.py MODE URL CERT.pem CA.pem OUT_FILE
MODE "read": read the body and throw it away (the ceiling for any aiohttp client);
MODE "hash+write": also SHA-256 it and write it to OUT_FILE, all on the event loop, which is
the least work omar-bulk has to do with each byte. Exit 0 only on a 200 answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import sys

import aiohttp
import yarl


async def fetch(mode: str, url: str, context: ssl.SSLContext, target: str) -> int:
    connector = aiohttp.TCPConnector(ssl=context)
    async with (
        aiohttp.ClientSession(
            connector=connector, read_bufsize=1 << 20, auto_decompress=False
        ) as session,
        session.get(yarl.URL(url, encoded=True)) as response,
    ):
        if response.status != 200:
            return 1
        if mode == "read":
            async for _ in response.content.iter_chunked(256 << 10):
                pass
            return 0
        hasher = hashlib.sha256()
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            async for chunk in response.content.iter_chunked(256 << 10):
                hasher.update(chunk)
                os.write(fd, chunk)
        finally:
            os.close(fd)
        return 0


def main() -> int:
    mode, url, cert, ca, target = sys.argv[1:6]
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert)
    return asyncio.run(fetch(mode, url, context, target))


if __name__ == "__main__":
    sys.exit(main())
