"""omar-bulk: bulk, resumable downloads of Settlement Quality Meter Data from CAISO OMAR-Online.

The package is a library first; ``omar_bulk.cli`` is a thin front end over it. Importing the
package is cheap: the network, TLS and terminal modules load only when a run needs them.

    from omar_bulk import Settings, fetch
    result = fetch(settings)            # blocking; returns a RunResult

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .errors import OmarBulkError
    from .results import RunResult
    from .run import fetch
    from .settings import Settings

__all__ = ["OmarBulkError", "RunResult", "Settings", "__version__", "fetch"]

_LAZY = {
    "OmarBulkError": "errors",
    "RunResult": "results",
    "Settings": "settings",
    "fetch": "run",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'omar_bulk' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
