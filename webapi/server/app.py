"""Build the Bottle WSGI app of the API server (`create_app`), with no module-level state."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import bottle

from webapi.calcs import Calc
from webapi.contract.calc import CalcState, LoginGrant
from webapi.contract.openapi import openapi_document
from webapi.contract.timefmt import format_ts
from webapi.errors import ApiError, BadRequest
from webapi.mint.server import query_schemas, register_mint_routes, request_schemas
from webapi.server.auth import Principal, UserStore
from webapi.server.config import ConfigSource, ServerConfig
from webapi.server.metrics import CONTENT_TYPE, ServerMetrics
from webapi.server.routes_poller import register_poller_routes
from webapi.server.routes_workflow import register_calc_routes
from webapi.server.routing import (
    Deps,
    header,
    json_error_handler,
    read_json,
    require_admin,
    route,
)
from webapi.server.status import SessionStore, register_status_routes
from webapi.server.watchdog import Watchdog
from webapi.store.base import JobStore


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    return f"{seconds / 3600:.1f} h"


def _no_poller_lists(deps: Deps, calc: Calc, absent_seconds: float) -> str | None:
    """Why a calc waits when live pollers exist but every one listed its commands, none `calc`'s
    (a poller that did not list them may take any calc: then None)."""
    now = time.time()
    live = [s for s in deps.store.poller_sightings(calc.site) if now - s.seen <= absent_seconds]
    if not live or any(s.commands is None or calc.command in s.commands for s in live):
        return None
    names = ", ".join(sorted(s.poller for s in live))
    return (
        f"command {calc.command} is not on the list of any poller seen in the last"
        f" {_ago(absent_seconds)} (pollers: {names})"
    )


def render_calc(deps: Deps, calc: Calc) -> dict[str, Any]:
    """The contract's calc object; a queued calc's reason says why it waits."""
    view = calc.view()
    if calc.state is CalcState.QUEUED:
        conf = deps.config.current
        seen = deps.store.poller_seen(calc.site)
        if seen is None:
            why = f"no poller has been seen for site {calc.site}"
        else:
            ago = time.time() - seen[1]
            if ago > conf.poller_absent_seconds:
                why = f"no poller seen for site {calc.site} for {_ago(ago)}"
            else:
                why = _no_poller_lists(deps, calc, conf.poller_absent_seconds) or (
                    f"waiting for a poller of site {calc.site} (last seen {_ago(ago)} ago)"
                )
        view = replace(view, reason=f"{calc.reason}; {why}" if calc.reason else why)
    return view.to_json()


def _sites_doc(deps: Deps, conf: ServerConfig) -> dict[str, Any]:
    sites = []
    now = time.time()
    for name, site in sorted(conf.sites.items()):
        seen = deps.store.poller_seen(name)
        sites.append(
            {
                "name": name,
                "commands": list(site.commands),
                "lease_seconds": conf.site_lease_seconds(name),
                "poller_last_seen": None
                if seen is None
                else {"poller": seen[0], "at": format_ts(seen[1]), "ago": int(now - seen[1])},
            }
        )
    return {"sites": sites}


def api_document() -> dict[str, Any]:
    """The served OpenAPI document: the contract's, with the original protocol's request bodies
    and GET query parameters as its parsers describe them."""
    return openapi_document(request_schemas(), query_schemas())


def create_app(
    store: JobStore,
    config_source: ConfigSource,
    auth: UserStore,
    *,
    watchdog: Watchdog | None = None,
    sessions: SessionStore | None = None,
    metrics: ServerMetrics | None = None,
) -> bottle.Bottle:
    """A fresh Bottle app serving the HTTP contract of docs/api.md; `watchdog` (the server's)
    gives request bodies a deadline; `sessions` are the status page's (default: a fresh store);
    `metrics` (made here if not given) counts its requests."""
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False
    app.default_error_handler = json_error_handler
    deps = Deps(store=store, config=config_source, auth=auth, watchdog=watchdog)

    @route(app, deps, "GET", "/healthz", public=True)
    def healthz(_p: None) -> dict[str, Any]:
        return {"status": "ok"}

    # Assembled here, the composition root: the contract package may not import webapi.mint,
    # whose parsers describe the original protocol's request bodies.
    document = api_document()

    @route(app, deps, "GET", "/api/v1/openapi.json", public=True)
    def openapi(_p: None) -> dict[str, Any]:
        return document

    @route(app, deps, "POST", "/api/v1/login", public=True)
    def login(_p: None) -> dict[str, Any]:
        body = read_json()
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            raise BadRequest("give 'user' and 'password' as strings")
        new = auth.login(user, password)
        return LoginGrant(new.token, new.expires).to_json()

    @route(app, deps, "GET", "/api/v1/sites")
    def sites(p: Principal) -> dict[str, Any]:
        require_admin(p)
        return _sites_doc(deps, config_source.get())

    @route(app, deps, "POST", "/api/v1/admin/calcs/<calc_id>/requeue")
    def requeue(p: Principal, calc_id: str) -> dict[str, Any]:
        require_admin(p)
        return render_calc(deps, store.requeue(calc_id))

    register_calc_routes(app, deps, render_calc)
    register_poller_routes(app, deps, render_calc)
    # The original MInt protocol over the same store (docs/mint-protocol.md).
    register_mint_routes(app, deps)
    # The status page for people (docs/operations.md, "Status page").
    register_status_routes(app, deps, render_calc, sessions)

    metrics = metrics or ServerMetrics(store, config_source)

    def metrics_page() -> str | bytes:
        # Admins only: the numbers name sites and show load. A Prometheus on this host can use
        # the separate loopback listener instead (metrics_listen), without a token.
        try:
            require_admin(auth.authenticate(header("Authorization")))
        except ApiError as exc:
            bottle.response.status = exc.status
            bottle.response.content_type = "application/json"
            return json.dumps(exc.to_json())
        bottle.response.content_type = CONTENT_TYPE
        return metrics.exposition()

    app.route("/metrics", method="GET", callback=metrics_page)

    # Count every request, unmatched ones too, when its answer has been sent: Bottle's own
    # hooks run before a streamed body is sent. Bottle.__call__ calls self.wsgi.
    app.wsgi = metrics.wrap(app.wsgi)
    app.config["extcomp.metrics"] = metrics
    return app
