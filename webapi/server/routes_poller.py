"""Routes of the poller: long-poll claim, heartbeat, finish and result upload under a lease."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import bottle

from webapi.calcs import Calc
from webapi.contract.calc import (
    CalcState,
    ClaimRequest,
    FileAck,
    FinishReport,
    Heartbeat,
    HeartbeatReply,
    LeaseGrant,
    Unclaim,
)
from webapi.errors import ApiError, Forbidden
from webapi.server.auth import Principal
from webapi.server.routing import (
    Deps,
    body_stream,
    header,
    peer_alive,
    query_int,
    read_json,
    route,
)
from webapi.store.base import ClaimTerms

Render = Callable[[Deps, Calc], dict[str, Any]]
# Worker threads kept free for non-claim requests whatever the number of waiting pollers.
RESERVED_THREADS = 8


def _lease_holder(p: Principal, calc: Calc) -> None:
    if calc.user != p.user:
        raise Forbidden(
            f"calc {calc.id} was registered by another user; its poller needs their token"
        )


def register_poller_routes(app: bottle.Bottle, deps: Deps, render: Render) -> None:
    store = deps.store

    @route(app, deps, "POST", "/api/v1/sites/<site>/claim")
    def claim(p: Principal, site: str) -> Any:
        conf = deps.config.get()
        if site not in conf.sites:
            raise ApiError(f"unknown site {site!r}", code="unknown_site", status=400)
        req = ClaimRequest.from_json(read_json(required=False), default_poller=p.user)
        wait = min(req.wait, float(conf.claim_wait_max))
        # Each waiting claim holds a worker thread: past the budget, answer at once instead.
        with deps.long_poll_lock:
            if deps.long_polls >= max(1, conf.threads - RESERVED_THREADS):
                wait = 0
            deps.long_polls += 1
        terms = ClaimTerms(
            confirm_seconds=conf.claim_confirm_seconds if req.confirm else None,
            still_there=peer_alive(bottle.request.environ),
            agent=header("User-Agent"),
            commands=req.commands,
        )
        try:
            calc = store.claim(site=site, user=p.user, poller=req.poller, wait=wait, terms=terms)
        finally:
            with deps.long_poll_lock:
                deps.long_polls -= 1
        if calc is None or calc.lease is None:
            return 204, None
        lease = LeaseGrant(calc.lease.id, calc.lease.expires, conf.heartbeat_seconds)
        return {"calc": render(deps, calc), "lease": lease.to_json()}

    @route(app, deps, "POST", "/api/v1/calcs/<calc_id>/heartbeat")
    def heartbeat(p: Principal, calc_id: str) -> dict[str, Any]:
        _lease_holder(p, store.get(calc_id))
        beat = Heartbeat.from_json(read_json())
        calc = store.heartbeat(calc_id, beat.lease, beat.progress)
        expires = calc.lease.expires if calc.lease is not None else None
        return HeartbeatReply(calc.state is CalcState.CANCELLED, expires).to_json()

    @route(app, deps, "POST", "/api/v1/calcs/<calc_id>/finish")
    def finish(p: Principal, calc_id: str) -> dict[str, Any]:
        _lease_holder(p, store.get(calc_id))
        report = FinishReport.from_json(read_json())
        calc = store.finish(
            calc_id,
            lease_id=report.lease,
            exit_code=report.exit_code,
            reason=report.reason,
            results=report.results,
            quota_bytes=deps.config.current.quota_bytes,
        )
        return render(deps, calc)

    @route(app, deps, "POST", "/api/v1/calcs/<calc_id>/unclaim")
    def unclaim(p: Principal, calc_id: str) -> dict[str, Any]:
        _lease_holder(p, store.get(calc_id))
        body = Unclaim.from_json(read_json())
        return render(deps, store.unclaim(calc_id, body.lease, body.reason))

    @route(app, deps, "PUT", "/api/v1/calcs/<calc_id>/results/<name:path>")
    def put_result(p: Principal, calc_id: str, name: str) -> dict[str, Any]:
        name = unquote(name)  # cheroot keeps %2F encoded; valid names never contain "%"
        _lease_holder(p, store.get(calc_id))
        offset = query_int("offset", 0)
        lease = bottle.request.query.get("lease") or None
        body, length = body_stream()
        _calc, entry = store.write_file(calc_id, "results", name, offset, body, length, lease)
        return FileAck(entry.name, entry.received, entry.complete).to_json()
