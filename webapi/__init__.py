"""WebAPI mode (pull), one subpackage per side: `server/` (API server), `store/` (YAML job store),
`client/` (workflow side), `poller/` (external host), `mint/` (the original MInt protocol on each
side), over a shared core (`contract/` wire shapes, `calcs`, `errors`, `fs`, `transport`).

The public names are imported lazily so that a poller host, which installs only `requests` and
PyYAML, never imports the server's dependencies (Bottle, cheroot).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "webapi.server.app",
    "JobStore": "webapi.store.base",
    "YamlJobStore": "webapi.store.yaml_store",
    "Poller": "webapi.poller.loop",
    "Client": "webapi.client.client",
    "CalcView": "webapi.contract.calc",
    "ApiError": "webapi.errors",
    "ConfigError": "webapi.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'webapi' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
