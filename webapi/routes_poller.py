"""Routes of the poller: long-poll claim, heartbeat, finish and result upload under a lease."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import bottle

from webapi.auth import Principal
from webapi.errors import ApiError, BadRequest, Forbidden
from webapi.http import Deps, body_stream, query_int, read_json, route
from webapi.jobs import Calc, CalcState, parse_manifest
from webapi.timefmt import format_ts

Render = Callable[[Deps, Calc], dict[str, Any]]
POLLER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")
DEFAULT_WAIT = 50
# Worker threads kept free for non-claim requests whatever the number of waiting pollers.
RESERVED_THREADS = 8


def _lease_holder(p: Principal, calc: Calc) -> None:
    if calc.user != p.user:
        raise Forbidden(
            f"calc {calc.id} was registered by another user; its poller needs their token"
        )


def _lease_id(body: dict[str, Any]) -> str:
    lease = body.get("lease")
    if not isinstance(lease, str) or not lease:
        raise BadRequest("'lease' must be the lease id returned by claim")
    return lease


def register_poller_routes(app: bottle.Bottle, deps: Deps, render: Render) -> None:
    store = deps.store

    @route(app, deps, "POST", "/api/v1/sites/<site>/claim")
    def claim(p: Principal, site: str) -> Any:
        conf = deps.config.get()
        if site not in conf.sites:
            raise ApiError(f"unknown site {site!r}", code="unknown_site", status=400)
        body = read_json(required=False)
        poller = body.get("poller", p.user)
        if not isinstance(poller, str) or not POLLER_RE.match(poller):
            raise BadRequest("'poller' must be a short id: letters, digits and '._@:-'")
        wait = body.get("wait", DEFAULT_WAIT)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise BadRequest("'wait' must be a number of seconds ≥ 0")
        wait = min(float(wait), float(conf.claim_wait_max))
        # Each waiting claim holds a worker thread: past the budget, answer at once instead.
        with deps.long_poll_lock:
            if deps.long_polls >= max(1, conf.threads - RESERVED_THREADS):
                wait = 0
            deps.long_polls += 1
        try:
            calc = store.claim(site=site, user=p.user, poller=poller, wait=wait)
        finally:
            with deps.long_poll_lock:
                deps.long_polls -= 1
        if calc is None or calc.lease is None:
            return 204, None
        lease = {
            "id": calc.lease.id,
            "expires": format_ts(calc.lease.expires),
            "heartbeat": conf.heartbeat_seconds,
        }
        return {"calc": render(deps, calc), "lease": lease}

    @route(app, deps, "POST", "/api/v1/calcs/<calc_id>/heartbeat")
    def heartbeat(p: Principal, calc_id: str) -> dict[str, Any]:
        _lease_holder(p, store.get(calc_id))
        body = read_json()
        progress = body.get("progress")
        if progress is not None and (not isinstance(progress, str) or len(progress) > 1000):
            raise BadRequest("'progress' must be a string of at most 1000 characters")
        calc = store.heartbeat(calc_id, _lease_id(body), progress)
        expires = format_ts(calc.lease.expires) if calc.lease is not None else None
        return {"cancel": calc.state is CalcState.CANCELLED, "expires": expires}

    @route(app, deps, "POST", "/api/v1/calcs/<calc_id>/finish")
    def finish(p: Principal, calc_id: str) -> dict[str, Any]:
        _lease_holder(p, store.get(calc_id))
        body = read_json()
        exit_code = body.get("exit_code")
        if isinstance(exit_code, bool) or not isinstance(exit_code, int):
            raise BadRequest("'exit_code' must be an integer")
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 4000):
            raise BadRequest("'reason' must be a string of at most 4000 characters")
        calc = store.finish(
            calc_id, lease_id=_lease_id(body), exit_code=exit_code, reason=reason,
            results=parse_manifest(body.get("results"), "results"),
            quota_bytes=deps.config.current.quota_bytes,
        )  # fmt: skip
        return render(deps, calc)

    @route(app, deps, "PUT", "/api/v1/calcs/<calc_id>/results/<name:path>")
    def put_result(p: Principal, calc_id: str, name: str) -> dict[str, Any]:
        name = unquote(name)  # cheroot keeps %2F encoded; valid names never contain "%"
        _lease_holder(p, store.get(calc_id))
        offset = query_int("offset", 0)
        lease = bottle.request.query.get("lease") or None
        body, length = body_stream()
        _calc, entry = store.write_file(calc_id, "results", name, offset, body, length, lease)
        return {"name": entry.name, "received": entry.received, "complete": entry.complete}
