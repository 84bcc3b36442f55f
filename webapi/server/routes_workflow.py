"""Routes of the workflow side: register calcs, upload inputs, follow, cancel, fetch results."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import bottle

from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileAck, Registration
from webapi.errors import ApiError, BadRequest, Forbidden
from webapi.server.auth import Principal
from webapi.server.routing import (
    Deps,
    Stream,
    body_stream,
    query_int,
    read_json,
    require_owner,
    route,
    send_file,
)
from webapi.store.base import NewCalcRequest

Render = Callable[[Deps, Calc], dict[str, Any]]


def check_someone_serves(deps: Deps, user: str, site: str) -> None:
    """Refuse a calc no poller could ever take: pollers have served `site`, none of `user`'s.

    A poller takes only the calcs of its own token's user, so such a calc would wait unseen
    until it expires in the queue. A site no poller has been seen for yet is fine: one may come.
    """
    seen = deps.store.poller_users(site)
    if not seen or user in seen:
        return
    ago = max(0, round(time.time() - max(seen.values())))
    raise ApiError(
        f"site {site!r} is served only by pollers of other users ({len(seen)} user(s), "
        f"last seen {ago} s ago); a poller takes only the calcs of its own token's user: "
        f"run one with a token of {user}",
        code="no_poller_for_user",
        status=409,
    )


def _parse_new_calc(deps: Deps, user: str, body: dict[str, Any]) -> tuple[NewCalcRequest, int]:
    reg = Registration.from_json(body)
    conf = deps.config.get()  # re-read at each registration: operators edit it live
    if reg.site not in conf.sites:
        raise ApiError(
            f"unknown site {reg.site!r}; configured sites: {sorted(conf.sites)}",
            code="unknown_site",
            status=400,
        )
    allowed = conf.sites[reg.site].commands
    if reg.command not in allowed:
        raise ApiError(
            f"command {reg.command!r} is not allowed on site {reg.site!r}; "
            f"allowed: {list(allowed)}",
            code="command_not_allowed",
            status=403,
        )
    req = NewCalcRequest(
        user=user,
        site=reg.site,
        command=reg.command,
        args=reg.args,
        inputs=reg.inputs,
        timeout=reg.timeout,
        request_id=reg.request_id,
    )
    return req, conf.quota_bytes


def register_calc_routes(app: bottle.Bottle, deps: Deps, render: Render) -> None:
    store = deps.store

    @route(app, deps, "POST", "/api/v1/calcs")
    def create(p: Principal) -> tuple[int, dict[str, Any]]:
        req, quota = _parse_new_calc(deps, p.user, read_json())
        try:
            check_someone_serves(deps, p.user, req.site)
        except ApiError:
            # A retry of a registration accepted earlier still gets its calc.
            if req.request_id is None:
                raise
            mine = store.list_calcs(user=p.user, state=None, site=req.site)
            replayed = [c for c in mine if c.request_id == req.request_id]
            if not replayed:
                raise
            return 200, render(deps, replayed[0])
        calc, created = store.create(req, quota_bytes=quota)
        return (201 if created else 200), render(deps, calc)

    @route(app, deps, "GET", "/api/v1/calcs")
    def list_calcs(p: Principal) -> dict[str, Any]:
        state_raw = bottle.request.query.get("state") or None
        try:
            state = CalcState(state_raw) if state_raw else None
        except ValueError:
            raise BadRequest(
                f"unknown state {state_raw!r}; use one of {[str(s) for s in CalcState]}"
            ) from None
        site = bottle.request.query.get("site") or None
        calcs = store.list_calcs(user=None if p.admin else p.user, state=state, site=site)
        return {"calcs": [render(deps, c) for c in calcs]}

    @route(app, deps, "GET", "/api/v1/calcs/<calc_id>")
    def get(p: Principal, calc_id: str) -> dict[str, Any]:
        calc = store.get(calc_id)
        require_owner(p, calc)
        return render(deps, calc)

    @route(app, deps, "POST", "/api/v1/calcs/<calc_id>/cancel")
    def cancel(p: Principal, calc_id: str) -> dict[str, Any]:
        require_owner(p, store.get(calc_id))
        return render(deps, store.cancel(calc_id, f"cancelled by {p.user}"))

    @route(app, deps, "PUT", "/api/v1/calcs/<calc_id>/inputs/<name:path>")
    def put_input(p: Principal, calc_id: str, name: str) -> dict[str, Any]:
        name = unquote(name)  # cheroot keeps %2F encoded; valid names never contain "%"
        calc = store.get(calc_id)
        if calc.user != p.user:
            raise Forbidden(f"only the owner of calc {calc_id} can upload its inputs")
        offset = query_int("offset", 0)
        body, length = body_stream()
        _calc, entry = store.write_file(calc_id, "inputs", name, offset, body, length, None)
        return FileAck(entry.name, entry.received, entry.complete).to_json()

    @route(app, deps, "GET", "/api/v1/calcs/<calc_id>/inputs/<name:path>")
    def get_input(p: Principal, calc_id: str, name: str) -> Stream:
        name = unquote(name)
        require_owner(p, store.get(calc_id))
        return send_file(*store.open_file(calc_id, "inputs", name))

    @route(app, deps, "GET", "/api/v1/calcs/<calc_id>/results/<name:path>")
    def get_result(p: Principal, calc_id: str, name: str) -> Stream:
        name = unquote(name)
        require_owner(p, store.get(calc_id))
        return send_file(*store.open_file(calc_id, "results", name))
