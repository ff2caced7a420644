"""One immutable, validated description of a run, built before any network work."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UsageError
from .plan import Plan
from .protocol import normalise_base_url
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
    dry_run: bool = False
    report: Path | None = None

    def __post_init__(self) -> None:
        url = normalise_base_url(self.base_url.strip())
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise UsageError(f"base URL {self.base_url!r}: only https:// is accepted")
        if not parts.hostname:
            raise UsageError(f"base URL {self.base_url!r} has no host")
        if parts.query or parts.fragment:
            raise UsageError(f"base URL {self.base_url!r} must not carry a query or fragment")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise UsageError(f"base URL {self.base_url!r} has a bad port") from None
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
        if self.cert is None and self.key is not None:
            raise UsageError("--key needs --cert")
        if self.cert is None and not self.dry_run:
            raise UsageError("a client certificate is required: give --cert (or OMAR_CERT)")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UsageError(f"--out {self.out_dir} exists and is not a folder")
