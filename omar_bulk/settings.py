"""One immutable, validated description of a run, built before any network work."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .dates import california_today
from .errors import UsageError
from .plan import Plan
from .protocol import normalise_base_url
from .text import printable

if TYPE_CHECKING:  # the TLS module loads cryptography: only a run needs it
    from .proxy import Proxy
    from .tls import PasswordSource

DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What to fetch, from where, with which identity, how hard, and where to put it."""

    plan: Plan
    base_url: str
    out_dir: Path = Path("omar-data")
    cert: Path | None = None
    key: Path | None = None
    ca_bundle: Path | None = None
    password: PasswordSource | None = field(default=None, repr=False)
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = None
    retries: int = 5
    timeout: float = 120.0
    retry_wait: float = 1.0
    max_retry_wait: float = 120.0
    overwrite: bool = False
    revisit_days: int | None = None
    today: date | None = None
    report: Path | None = None
    #: Where the journal, lock and report live (``--state-dir``); None: ``archive.state_folder``.
    state_dir: Path | None = None
    #: The forward proxy every connection goes through (``proxy.proxy_for``); None: direct.
    proxy: Proxy | None = None

    def revisit_from(self) -> date | None:
        """Items whose range ends on or after this date are fetched again, done or not."""
        if self.revisit_days is None:
            return None
        today = self.today or california_today()
        if self.revisit_days >= (today - date.min).days:
            return date.min  # reaches back past the first day there is: revisit everything
        return today - timedelta(days=self.revisit_days)

    def state_folder(self) -> Path:
        """Where the journal, lock and default report live (``archive.state_folder``)."""
        from .archive import state_folder

        return state_folder(self.out_dir, self.state_dir)[0]

    def default_report(self) -> Path:
        """Where the report goes without ``--report``."""
        from .report import REPORT_NAME

        return self.state_folder() / REPORT_NAME

    def _report_clobbers(self) -> bool:
        import os

        from .storage import claimed

        assert self.report is not None
        if str(self.report) == "-":  # standard output
            return False
        if os.path.realpath(self.report) == os.path.realpath(self.default_report()):
            return False
        return claimed(self.out_dir, self.report, self.state_folder())

    def __post_init__(self) -> None:
        raw = self.base_url.strip()
        if "@" in raw:
            # Never echo this URL: whatever stands before '@' may be a password.
            raise UsageError(
                "the base URL holds '@': a user name or password in the URL is not accepted "
                "(the client certificate identifies you); give https://HOST[:PORT]/PATH"
            )
        url = normalise_base_url(raw)
        shown = printable(raw, limit=200)
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise UsageError(f"base URL {shown} is not a valid URL") from None
        if parts.scheme != "https":
            raise UsageError(f"base URL {shown}: only https:// is accepted")
        if not parts.hostname:
            raise UsageError(f"base URL {shown} has no host")
        if parts.query or parts.fragment:
            raise UsageError(f"base URL {shown} must not carry a query or fragment")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise UsageError(f"base URL {shown} has a bad port") from None
        object.__setattr__(self, "base_url", url)
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise UsageError("--rate must be a positive number of requests per second")
        if not 0 <= self.retries <= 100:
            raise UsageError("--retries must be between 0 and 100")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise UsageError("--timeout must be a positive number of seconds")
        if not (self.retry_wait >= 0 and math.isfinite(self.retry_wait)):
            raise UsageError("--retry-wait must be zero or a positive number of seconds")
        if self.revisit_days is not None and not 0 <= self.revisit_days <= 36600:
            raise UsageError("--revisit-days must be zero or a positive number of days")
        if self.cert is None and self.key is not None:
            raise UsageError("--key needs --cert")
        if self.report is not None and self._report_clobbers():
            raise UsageError(
                f"--report {printable(str(self.report))} is among the files omar-bulk keeps in"
                f" {printable(str(self.out_dir))} or in its state folder"
                f" {printable(str(self.state_folder()))} (its journal or its data): choose"
                " another place"
            )
        if self.report is not None:
            from .userfiles import check_output

            check_output(self.report, "--report")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UsageError(f"--out {self.out_dir} exists and is not a folder")


__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_CONCURRENCY",
    "Settings",
]
