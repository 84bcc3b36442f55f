"""Add the original protocol's routes (`/mi-distcomp-api/…`) to the API app."""

from __future__ import annotations

import bottle

from webapi.http import Deps
from webapi.mint.payloads import remove_stale_staging
from webapi.mint.routes import register_workflow_routes
from webapi.mint.routes_site import register_site_routes


def register_mint_routes(app: bottle.Bottle, deps: Deps) -> None:
    remove_stale_staging(deps.config.current.data_dir)
    register_workflow_routes(app, deps)
    register_site_routes(app, deps)
