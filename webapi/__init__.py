"""WebAPI mode (pull): API server, YAML job store, poller and workflow-side client.

The public names are imported lazily so that a poller host, which installs only `requests` and
PyYAML, never imports the server's dependencies (Bottle, cheroot).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "webapi.app",
    "JobStore": "webapi.store",
    "YamlJobStore": "webapi.store",
    "Poller": "webapi.poller",
    "Client": "webapi.client",
    "ApiError": "webapi.errors",
    "ConfigError": "webapi.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'webapi' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
