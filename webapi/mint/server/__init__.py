"""The original protocol's server side: its routes under `/mi-distcomp-api/`, mounted on our app.

A translation seam only: every route maps onto the job store, state machine and auth that the
native API uses (docs/mint-protocol.md); nothing here keeps state of its own.
"""

from __future__ import annotations

import bottle

from webapi.mint.codec.calls import query_schemas
from webapi.mint.server.documents import request_schemas
from webapi.mint.server.payloads import remove_stale_staging
from webapi.mint.server.routes_site import register_site_routes
from webapi.mint.server.routes_workflow import register_workflow_routes
from webapi.server.routing import Deps

__all__ = ["query_schemas", "register_mint_routes", "request_schemas"]


def register_mint_routes(app: bottle.Bottle, deps: Deps) -> None:
    remove_stale_staging(deps.config.current.data_dir)
    register_workflow_routes(app, deps)
    register_site_routes(app, deps)
