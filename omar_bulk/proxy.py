"""Which forward proxy, if any, carries the connections to the server: decided once, before a run.

The rules are curl's, so a machine set up for curl, pip or aria2 needs nothing more:

    --no-proxy, --proxy ''              direct, whatever the environment says
    --proxy URL ─▶ OMAR_PROXY ─▶ https_proxy ─▶ HTTPS_PROXY ─▶ all_proxy ─▶ ALL_PROXY
                                        the first one set wins; set but empty means direct
    no_proxy ─▶ NO_PROXY                may then send the server's host direct after all

A ``NO_PROXY`` entry is ``*`` (every host), a host name (that host and the hosts below it),
``.domain`` (the same), an IP address or CIDR range, each optionally with ``:port``. Credentials
come from the proxy URL (percent-encoded) or, when it has no password, from ``~/.netrc``
(``NETRC`` names another file) for the proxy's host, as aiohttp reads them. A password is
refused on the command line, where ``ps`` shows it to every user of the machine.

``choose`` and ``bypassed`` are pure and tested as tables; ``proxy_for`` adds the environment
and the netrc file. The result, a frozen ``Proxy`` or None, goes into ``Settings``; the session
hands it to aiohttp per request (aiohttp's own ``trust_env`` stays off: it would also send netrc
passwords to the server and ignores ``ALL_PROXY`` and ``https://`` proxies). The password is
kept out of ``repr``, ``str`` and every message: only ``authorization()`` gives it out.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import UsageError
from .text import printable

__all__ = [
    "ENVIRONMENT",
    "NO_PROXY_VARIABLES",
    "Proxy",
    "auth_refused",
    "bypassed",
    "choose",
    "connect_unanswered",
    "netrc_credentials",
    "netrc_warning",
    "no_tls_with",
    "not_http",
    "not_set_up",
    "parse_proxy_url",
    "proxy_for",
    "tunnel_cut",
    "tunnel_refused",
    "unreachable",
]

#: The variables that name a proxy for an https:// server, in curl's order (lower case first).
ENVIRONMENT = ("OMAR_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
#: The variables that list hosts to reach directly, in curl's order.
NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")
#: The option's name in messages.
OPTION = "--proxy"

_DEFAULT_PORTS = {"http": 80, "https": 443}

#: Looks up (login, password) for a proxy host; None when there is nothing for it.
CredentialLookup = Callable[[str], "tuple[str, str] | None"]


@dataclass(frozen=True, slots=True)
class Proxy:
    """One forward proxy: where it is, who we are to it, and where the setting came from."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Where the URL was found: ``--proxy``, ``HTTPS_PROXY``, ...
    source: str = OPTION
    #: Where the credentials came from: ``the URL``, a netrc file's path, or None.
    credentials_from: str | None = None

    @property
    def url(self) -> str:
        """``scheme://host:port``: no credentials, safe to show and to hand to aiohttp."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def shown(self) -> str:
        """The proxy as messages name it: its URL with the user name, never the password."""
        if not self.username:
            return printable(self.url)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return printable(f"{self.scheme}://{self.username}@{host}:{self.port}")

    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` header's value (Basic), or None without credentials."""
        if self.username is None:
            return None
        secret = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(secret).decode("ascii")

    def __str__(self) -> str:
        return f"{self.shown} (from {self.source})"


def auth_refused(proxy: Proxy, said: str, challenges: list[str] | tuple[str, ...] = ()) -> str:
    """Why a 407 stops everything, and what to do (for ``fetch`` and ``check`` alike).

    ``challenges`` are the proxy's ``Proxy-Authenticate`` headers: a proxy that offers only
    NTLM, Negotiate (Kerberos) or Digest cannot be answered with Basic credentials at all.
    """
    schemes = [c.strip().split(" ", 1)[0] for c in challenges if c.strip()]
    if schemes and not any(scheme.lower() == "basic" for scheme in schemes):
        offered = ", ".join(dict.fromkeys(printable(scheme, limit=20) for scheme in schemes))
        windows = any(scheme.lower() in ("ntlm", "negotiate", "kerberos") for scheme in schemes)
        remedy = (
            "run a local bridge such as cntlm or px on 127.0.0.1 and set"
            " HTTPS_PROXY=http://127.0.0.1:PORT (README: Behind a proxy)"
            if windows
            else "ask the proxy's administrators for Basic access"
        )
        return (
            f"the proxy {proxy} asks for authentication ({said}) by {offered} only, which"
            f" omar-bulk cannot answer (it speaks Basic): {remedy}"
        )
    how = (
        f"the credentials for {proxy.username!r} (from {proxy.credentials_from}) were refused"
        if proxy.username is not None
        else "no credentials were given"
    )
    return (
        f"the proxy {proxy} asks for authentication ({said}): {how}; give them in the proxy"
        " URL of HTTPS_PROXY or OMAR_PROXY (http://USER:PASSWORD@HOST:PORT, percent-encoded)"
        " or in ~/.netrc. NTLM or Kerberos proxies need a local bridge such as cntlm or px"
    )


def tunnel_refused(
    proxy: Proxy, target: str, said: str, status: int = 403, location: str | None = None
) -> str:
    """Why a proxy's refusal of CONNECT (``status``, ``said`` with its reason) ends the run,
    and whom to ask. A redirect is a network that wants a login first (a captive portal), not
    a rule about ports."""
    if 300 <= status < 400:
        where = f" to {printable(location, limit=120)}" if location else ""
        return (
            f"the proxy {proxy} answered CONNECT {target} with a redirect ({said}{where}): this"
            " network wants a login first (a captive portal, as on guest networks): open a web"
            " page in a browser and log in, then run again, or ask the network's administrators"
        )
    return (
        f"the proxy {proxy} refused the tunnel to {target}: {said}; many proxies allow CONNECT"
        f" to port 443 only: ask its administrators to allow {target}, or go direct with"
        " --no-proxy if this network allows it"
    )


def not_http(proxy: Proxy, said: str) -> str:
    """Why an answer to CONNECT that is not HTTP at all ends the run: another service there."""
    return (
        f"the proxy {proxy} answered CONNECT with something that is not HTTP ({said}): check"
        " that its host and port are those of an HTTP proxy, or go direct with --no-proxy if"
        " this network allows it"
    )


def no_tls_with(proxy: Proxy, reason: str) -> str:
    """Why an ``https://`` proxy whose TLS handshake failed (other than on its certificate)
    ends the run: most proxies speak plain HTTP, even for https:// servers."""
    return (
        f"no TLS session with the proxy {proxy}: {reason}; it may not speak TLS (most proxies"
        " do not, even for https:// servers): write http:// instead of https:// in the proxy"
        " URL"
    )


def connect_unanswered(proxy: Proxy, target: str, timeout: float) -> str:
    """Why a proxy that took the connection and never answered CONNECT ends ``check``."""
    return (
        f"the proxy {proxy} did not answer CONNECT {target} within {timeout:g} s; check that"
        " its host and port are those of an HTTP proxy, or go direct with --no-proxy if this"
        " network allows it"
    )


def unreachable(proxy: Proxy, reason: str) -> str:
    """Why a proxy that cannot be reached ends the run."""
    return (
        f"cannot reach the proxy {proxy}: {reason}; check its address and port, or go direct"
        " with --no-proxy if this network allows it"
    )


def not_set_up(proxy: Proxy, timeout: float) -> str:
    """Why a connection through ``proxy`` was given up while being set up (``--timeout``)."""
    silent = (
        "; a plain HTTP proxy given as https:// is silent too: try http://"
        if proxy.scheme == "https"
        else ""
    )
    return (
        f"no connection through the proxy {proxy} within {timeout:g} s: the proxy did not"
        " answer our CONNECT in time (or the server's TLS handshake inside the tunnel did not"
        f" come){silent}"
    )


def tunnel_cut(proxy: Proxy) -> str:
    """Why connections closed during the TLS handshake inside the proxy's tunnel (the proxy
    allowed CONNECT, then the tunnel ended before the server's TLS answered) end the run."""
    return (
        f"the proxy {proxy} allowed the tunnel, then it was closed during the TLS handshake,"
        " before the server answered (the proxy and the server look alike from here, and"
        " proxies do it more often); many proxies cut tunnels their rules do not allow (a"
        " port other than 443, a host not on a list, TLS inspection): ask its administrators,"
        " or go direct with --no-proxy if this network allows it"
    )


def choose(
    environ: Mapping[str, str], *, option: str | None = None, direct: bool = False
) -> tuple[str, str] | None:
    """The setting that names the proxy, as (where it was found, its raw value); None: direct.

    ``option`` is ``--proxy``'s value (None when not given; ``''`` means direct), ``direct``
    is ``--no-proxy``. The first variable that is set wins, even when empty (curl's rule:
    ``https_proxy=`` turns off an inherited ``HTTPS_PROXY``).
    """
    if direct:
        return None
    if option is not None:
        return (OPTION, option.strip()) if option.strip() else None
    for name in ENVIRONMENT:
        if name in environ:
            value = environ[name].strip()
            return (name, value) if value else None
    return None


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """True when a ``NO_PROXY`` value sends ``host:port`` direct.

    Entries are separated by commas or spaces; case and a trailing dot do not matter. An entry
    without a port matches every port. A name matches itself and every host below it
    (``caiso.com`` and ``.caiso.com`` both match ``omar-online.caiso.com``); an IP address
    matches that address only, however it is written; a CIDR range every address in it.
    """
    target = host.strip().strip("[]").rstrip(".").lower()
    address = _address(target)
    for raw in no_proxy.replace(",", " ").split():
        entry = raw.lower()
        if entry == "*":
            return True
        name, wanted = _split_port(entry)
        if name is None or (wanted is not None and wanted != port):
            continue
        if "/" in name:
            try:
                network = ipaddress.ip_network(name, strict=False)
            except ValueError:
                continue
            if address is not None and address.version == network.version and address in network:
                return True
            continue
        listed = _address(name)
        if listed is not None:
            if address is not None and listed == address:
                return True
            continue
        name = name.removeprefix("*").lstrip(".").rstrip(".")
        if address is not None:
            continue  # an address is matched by addresses only, never by a name's suffix
        if name and (target == name or target.endswith("." + name)):
            return True
    return False


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_port(entry: str) -> tuple[str | None, int | None]:
    """An entry's host and port (None: any port); (None, None) for an unreadable entry."""
    if entry.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = entry[1:].partition("]")
        if not rest:
            return inside, None
        return (inside, int(rest[1:])) if rest[1:].isdigit() and rest[0] == ":" else (None, None)
    if entry.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
        name, _, port = entry.partition(":")
        return (name, int(port)) if port.isdigit() else (None, None)
    return entry, None


def parse_proxy_url(raw: str, source: str) -> Proxy:
    """A proxy URL read into a ``Proxy``, or a UsageError that never quotes the password.

    ``http://`` (CONNECT through a plain connection) and ``https://`` (TLS to the proxy too)
    are accepted; without a scheme, ``http://`` is meant, as curl reads it. Without a port,
    the scheme's own (80, 443) applies, as aiohttp connects. The user name and password are
    percent-decoded; the password may hold ``/``, ``?``, ``#`` or ``@`` unencoded, since the
    host is what follows the last ``@``.
    """
    text = raw.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    scheme = scheme.lower()
    userinfo, at, hostport = rest.rpartition("@")
    # A URL that cannot be read is not quoted past its scheme: where the host is missing,
    # what stands in its place may be the user name and the password ("http://jo:Sekr1t").
    shown = f"{source}={printable(scheme, limit=20)}://… (not quoted: it may hold a password)"
    if scheme.startswith("socks"):
        raise UsageError(
            f"{shown}: SOCKS proxies are not supported; give an http:// or https:// proxy"
        )
    if scheme not in _DEFAULT_PORTS:
        raise UsageError(f"{shown}: a proxy URL starts with http:// or https://")
    hostport = hostport.removesuffix("/")
    if any(c in hostport for c in "/?#"):
        raise UsageError(f"{shown}: a proxy URL is scheme://[user[:password]@]host[:port], no path")
    try:
        parts = urlsplit(f"{scheme}://{hostport}")
        port = parts.port
    except ValueError:
        raise UsageError(f"{shown}: the host or port is not valid") from None
    host = parts.hostname
    if not host:
        raise UsageError(f"{shown}: no host")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user)
        password = unquote(secret) if colon else None
    return Proxy(
        scheme=scheme,
        host=host.rstrip("."),
        port=port or _DEFAULT_PORTS[scheme],
        username=username,
        password=password,
        source=source,
        credentials_from="the URL" if password is not None else None,
    )


def _masked(text: str) -> str:
    """A proxy URL fit for a message: whatever stands before the last '@' is hidden."""
    head, at, host = text.rpartition("@")
    if not at:
        return printable(text, limit=120)
    scheme, sep, _ = head.partition("://")
    return printable(f"{scheme}://***@{host}" if sep else f"***@{host}", limit=120)


def netrc_credentials(environ: Mapping[str, str]) -> CredentialLookup:
    """Look up proxy credentials in ``NETRC`` or ``~/.netrc``, as aiohttp does (its
    ``default`` entry included). A file that is not there is no error; one that cannot be
    parsed is, without quoting it (its tokens may be passwords)."""

    def lookup(host: str) -> tuple[str, str] | None:
        import netrc

        named = environ.get("NETRC")
        path = _netrc_path(environ)
        try:
            entries = netrc.netrc(str(path))
        except FileNotFoundError:
            return None
        except netrc.NetrcParseError as exc:
            raise UsageError(
                f"{path} line {exc.lineno} cannot be read, so it cannot give the proxy's"
                " credentials: fix it, or put them in the proxy URL"
            ) from None
        except OSError as exc:
            if named:
                raise UsageError(f"NETRC={path}: cannot read it ({exc.strerror})") from None
            return None
        found = entries.authenticators(host)
        if found is None:
            return None
        login, account, password = found
        return (login or account or "", password or "")

    return lookup


def _netrc_path(environ: Mapping[str, str]) -> Path:
    named = environ.get("NETRC")
    return Path(named) if named else Path.home() / ".netrc"


def netrc_warning(proxy: Proxy | None, environ: Mapping[str, str]) -> str | None:
    """A warning when the netrc file that gave ``proxy`` its password can be read by others
    than its owner (the rule the client certificate's file is held to, ``tls.readers``)."""
    if proxy is None or proxy.credentials_from in (None, "the URL"):
        return None
    from .tls import readers

    path = _netrc_path(environ)
    try:
        mode, others = readers(path)
    except OSError:
        return None
    if others is None:
        return None
    return (
        f"{path} gives the password for the proxy {proxy.shown} and is {mode:04o}: {others}"
        f" can read it; chmod 600 {path}"
    )


def proxy_for(
    base_url: str,
    environ: Mapping[str, str] | None = None,
    *,
    option: str | None = None,
    direct: bool = False,
    credentials: CredentialLookup | None = None,
) -> Proxy | None:
    """The proxy for connections to ``base_url``, or None to connect directly.

    ``environ`` defaults to the process's environment; ``option`` is ``--proxy``'s value, which
    must not carry a password; ``credentials`` looks up netrc entries (default: the file
    ``netrc_credentials`` reads).
    """
    env = os.environ if environ is None else environ
    chosen = choose(env, option=option, direct=direct)
    if chosen is None:
        return None
    source, value = chosen
    proxy = parse_proxy_url(value, source)
    if source == OPTION and proxy.password:
        raise UsageError(
            f"--proxy {_masked(value)}: a password on the command line is visible to every"
            " user of this machine (ps); put the URL in HTTPS_PROXY or OMAR_PROXY instead,"
            " or the credentials in ~/.netrc"
        )
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    try:
        port = parts.port or 443
    except ValueError:
        port = 443  # Settings refuses such a URL with its own message
    for name in NO_PROXY_VARIABLES:
        if name in env:
            if bypassed(host, port, env[name]):
                return None
            break
    if proxy.password is None:
        lookup = credentials or netrc_credentials(env)
        found = lookup(proxy.host)
        if found is not None and (proxy.username in (None, found[0])):
            named = env.get("NETRC") or "~/.netrc"
            proxy = Proxy(
                scheme=proxy.scheme,
                host=proxy.host,
                port=proxy.port,
                username=found[0],
                password=found[1],
                source=proxy.source,
                credentials_from=named,
            )
    return proxy
