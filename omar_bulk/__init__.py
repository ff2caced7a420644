"""omar-bulk: bulk, resumable downloads of Settlement Quality Meter Data from CAISO OMAR-Online.

The package is a library first; ``omar_bulk.cli`` is a thin front end over it. Importing the
package is cheap: the network, TLS and terminal modules load only when a run needs them.

    from omar_bulk import Settings, fetch, load_manifest
    result = fetch(Settings(plan=load_manifest(path), base_url=..., cert=...))

No submodule carries the name of a public function, so ``omar_bulk.fetch`` stays the function
whatever has been imported (``tests/e2e/test_api.py`` pins that and ``__all__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

if TYPE_CHECKING:
    from .errors import OmarBulkError
    from .manifest import Defaults, load_manifest
    from .plan import Item, Plan
    from .results import ItemResult, NullObserver, Observer, RunResult, Status, Summary
    from .run import StopSignal, fetch, fetch_async, planned_urls
    from .settings import Settings

__all__ = [
    "Defaults",
    "Item",
    "ItemResult",
    "NullObserver",
    "Observer",
    "OmarBulkError",
    "Plan",
    "RunResult",
    "Settings",
    "Status",
    "StopSignal",
    "Summary",
    "__version__",
    "fetch",
    "fetch_async",
    "load_manifest",
    "planned_urls",
]

_LAZY = {
    "Defaults": "manifest",
    "Item": "plan",
    "ItemResult": "results",
    "NullObserver": "results",
    "Observer": "results",
    "OmarBulkError": "errors",
    "Plan": "plan",
    "RunResult": "results",
    "Settings": "settings",
    "Status": "results",
    "StopSignal": "run",
    "Summary": "results",
    "fetch": "run",
    "fetch_async": "run",
    "load_manifest": "manifest",
    "planned_urls": "run",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'omar_bulk' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
