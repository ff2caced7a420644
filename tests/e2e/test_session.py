"""The login state a run carries from one login to the next (``session.Session``), against
the stand-in server: counts that belong to one login start again at the next one."""

from __future__ import annotations

import asyncio

from omar_bulk.plan import Plan
from omar_bulk.politeness import Backoff
from omar_bulk.results import NullObserver
from omar_bulk.run import open_tls
from omar_bulk.session import Session
from omar_bulk.settings import Settings
from omar_bulk.standin.certs import DEMO_PASSWORD, TestPKI
from omar_bulk.standin.server import ServerThread


def _session(server: ServerThread, pki: TestPKI) -> Session:
    settings = Settings(
        plan=Plan(lambda: []),
        base_url=server.base_url,
        cert=pki.client_p12,
        ca_bundle=pki.ca,
        password=lambda _what: DEMO_PASSWORD,
        retries=0,
    )
    context, _warnings = open_tls(settings)
    return Session(settings, context, NullObserver(), Backoff(base=0.001, cap=0.001))


def test_each_login_counts_its_own_downloads_from_zero(server: ServerThread, pki: TestPKI) -> None:
    """The first login serves three downloads and expires: that is an ordinary expiry. The
    second login starts at zero served; when it expires too before serving anything, the
    server is in trouble (``troubled``), which it would never be if the first login's
    downloads were still counted. A third login that serves one is healthy again."""

    async def main() -> list[tuple[int, int, int, bool]]:
        session = _session(server, pki)
        seen = []
        async with session.running():
            first = await session.ready()
            for _ in range(3):
                session.served_one(first)
            seen.append((session.generation, session.served, session.barren, session.troubled()))
            await session.renew(first)  # expired after serving: an ordinary timeout
            second = session.generation
            seen.append((second, session.served, session.barren, session.troubled()))
            session.served_one(first)  # a late answer to the old login: not this one's
            seen.append((second, session.served, session.barren, session.troubled()))
            await session.renew(second)  # expired again before serving anything
            third = session.generation
            seen.append((third, session.served, session.barren, session.troubled()))
            session.served_one(third)
            seen.append((third, session.served, session.barren, session.troubled()))
            await session.renew(third)  # served one: an ordinary expiry again
            seen.append((session.generation, session.served, session.barren, session.troubled()))
        return seen

    assert asyncio.run(main()) == [
        (1, 3, 0, False),
        (2, 0, 0, False),
        (2, 0, 0, False),
        (3, 0, 1, True),
        (3, 1, 1, False),
        (4, 0, 0, False),
    ]
    assert server.state.logins == 4


def test_a_renewal_asked_for_an_old_login_logs_in_once(server: ServerThread, pki: TestPKI) -> None:
    """Several workers notice the same expiry: one login, whoever asks after it is told the
    session was already renewed."""

    async def main() -> int:
        session = _session(server, pki)
        async with session.running():
            first = await session.ready()
            await asyncio.gather(*(session.renew(first) for _ in range(4)))
            await session.renew(first)  # late: already replaced
            return session.generation

    assert asyncio.run(main()) == 2
    assert server.state.logins == 2
