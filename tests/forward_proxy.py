"""Forward proxies on loopback for the tests: the real proxy.py, and a tiny one for refusals.

``proxy_py`` starts the ``proxy.py`` package (a maintained forward proxy from PyPI, installed by
the ``test`` extra) as a child process on a free port, with Basic authentication when asked, and
reads its access log: each tunnel it opened is a ``CONNECT host:port`` line there. ``TinyProxy``
is a few lines of asyncio for what proxy.py cannot be told to do: refuse CONNECT with a chosen
status (Squid's 403 for a port outside ``SSL_ports``), or cut the first tunnels it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

#: Startup deadline: proxy.py imports its plugins and forks its workers in about a second.
START_DEADLINE = 30.0


@dataclass
class ProxyPy:
    """A running proxy.py: its port, its log, and its credentials (if it asks for any)."""

    port: int
    log: Path
    process: subprocess.Popen[bytes]
    user: str | None = None
    password: str | None = None

    def url(self, *, user: str | None = None, password: str | None = None) -> str:
        """``http://[user[:password]@]127.0.0.1:PORT``, the credentials percent-encoded."""
        auth = ""
        if user is not None:
            auth = quote(user, safe="")
            if password is not None:
                auth += ":" + quote(password, safe="")
            auth += "@"
        return f"http://{auth}127.0.0.1:{self.port}"

    def connects(self) -> list[str]:
        """``host:port`` of every CONNECT the proxy logged, in order (failed ones included)."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return re.findall(r" - CONNECT (\S+) - ", text)

    def tunnels_to(self, port: int, *, at_least: int = 1, deadline: float = 10.0) -> int:
        """Wait (within ``deadline``) until at least ``at_least`` CONNECTs to ``port`` are
        logged; the count. proxy.py writes an access line when a tunnel closes."""
        until = time.monotonic() + deadline
        while True:
            count = sum(c == f"127.0.0.1:{port}" for c in self.connects())
            if count >= at_least or time.monotonic() > until:
                return count
            time.sleep(0.05)

    def settled_tunnels(self, port: int, *, quiet: float = 0.3, deadline: float = 10.0) -> int:
        """The count of CONNECTs to ``port`` once no new one was logged for ``quiet`` seconds
        (tunnels are logged as they close, a moment after the client closed them)."""
        until = time.monotonic() + deadline
        count = -1
        changed = time.monotonic()
        while time.monotonic() < until:
            now = sum(c == f"127.0.0.1:{port}" for c in self.connects())
            if now != count:
                count, changed = now, time.monotonic()
            elif time.monotonic() - changed >= quiet:
                break
            time.sleep(0.05)
        return count


@contextlib.contextmanager
def proxy_py(
    folder: Path,
    *,
    user: str | None = None,
    password: str | None = None,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[ProxyPy]:
    """Run proxy.py on 127.0.0.1 (any free port) until the block ends. ``tls``: (certificate,
    key) to serve the proxy itself over TLS, an ``https://`` proxy."""
    folder.mkdir(parents=True, exist_ok=True)
    port_file = folder / "port"
    log = folder / "proxy.log"
    args = [
        sys.executable,
        "-m",
        "proxy",
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--num-workers",
        "1",
        "--num-acceptors",
        "1",
        "--log-file",
        str(log),
        "--log-level",
        "INFO",
        "--data-dir",
        str(folder / "data"),
        "--timeout",
        "30",
    ]
    if user is not None:
        args += ["--basic-auth", f"{user}:{password}"]
    if tls is not None:
        args += ["--cert-file", str(tls[0]), "--key-file", str(tls[1])]
    # Its own session: the whole group (acceptor and worker processes) ends with it.
    process = subprocess.Popen(
        args,
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "stderr", "wb"),  # noqa: SIM115 (the child owns it)
        start_new_session=True,
        env={**os.environ, "HOME": str(folder)},  # its cache folder, not the user's
    )
    try:
        port = _wait_for_port(port_file, process)
        yield ProxyPy(port, log, process, user, password)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_for_port(port_file: Path, process: subprocess.Popen[bytes]) -> int:
    until = time.monotonic() + START_DEADLINE
    while time.monotonic() < until:
        if process.poll() is not None:
            raise RuntimeError(f"proxy.py exited with {process.returncode} before listening")
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text.isdigit():
            port = int(text)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return port
        time.sleep(0.05)
    raise RuntimeError(f"proxy.py did not listen within {START_DEADLINE:g} s")


@dataclass
class TinyProxy:
    """A minimal CONNECT proxy in a thread of its own.

    ``status``: answer every CONNECT with this status and close (a refusal), unless it is 200.
    With 200, ``cut`` tunnels are closed right after the client's first bytes (the TLS
    ClientHello) before anything reaches the server; later ones are relayed both ways.
    ``garbage``: sent as soon as the client's first bytes arrive, whatever they are, then the
    connection is closed: a banner that is no HTTP at all, or a plain proxy's 400 to a TLS hello.
    """

    status: int = 200
    reason: str = "Connection established"
    #: Extra header lines of a refusal, e.g. ``Proxy-Authenticate: NTLM``.
    headers: tuple[str, ...] = ()
    cut: int = 0
    #: Sent in place of any answer to CONNECT (see above).
    garbage: bytes = b""
    port: int = 0
    requests: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TinyProxy:
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        # wait_closed waits for every handler too: the relays end when the client's end does.
        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.garbage:
                await asyncio.wait_for(reader.read(1), 10)
                writer.write(self.garbage)
                await writer.drain()
                return
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.requests.append(line)
            if self.status != 200:
                extra = "".join(f"{line}\r\n" for line in self.headers)
                writer.write(
                    f"HTTP/1.1 {self.status} {self.reason}\r\n{extra}Content-Length: 0\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                await writer.drain()
                return
            target = line.split()[1]
            host, _, port = target.rpartition(":")
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            if self.cut > 0:
                self.cut -= 1
                await asyncio.wait_for(reader.read(1), 10)
                return
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()


async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(1 << 16):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()
