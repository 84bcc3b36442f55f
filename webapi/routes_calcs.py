"""Routes of the workflow side: register calcs, upload inputs, follow, cancel, fetch results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import bottle

from webapi.auth import Principal
from webapi.errors import ApiError, BadRequest, Forbidden
from webapi.http import (
    Deps,
    Stream,
    body_stream,
    query_int,
    read_json,
    require_owner,
    route,
    send_file,
)
from webapi.jobs import Calc, CalcState, parse_manifest
from webapi.store import NewCalcRequest

Render = Callable[[Deps, Calc], dict[str, Any]]
_CALC_KEYS = {"site", "command", "args", "inputs", "timeout", "request_id"}
MAX_ARGS = 1000
MAX_ARG_CHARS = 4096


def _parse_new_calc(deps: Deps, user: str, body: dict[str, Any]) -> tuple[NewCalcRequest, int]:
    unknown = set(body) - _CALC_KEYS
    if unknown:
        raise BadRequest(f"unknown keys {sorted(unknown)}; allowed: {sorted(_CALC_KEYS)}")
    conf = deps.config.get()  # re-read at each registration: operators edit it live
    site, command = body.get("site"), body.get("command")
    if not isinstance(site, str) or not site:
        raise BadRequest("'site' must be a site name (see GET /api/v1/sites)")
    if site not in conf.sites:
        raise ApiError(
            f"unknown site {site!r}; configured sites: {sorted(conf.sites)}", code="unknown_site",
            status=400,
        )  # fmt: skip
    if not isinstance(command, str) or not command:
        raise BadRequest("'command' must be a command name")
    allowed = conf.sites[site].commands
    if command not in allowed:
        raise ApiError(
            f"command {command!r} is not allowed on site {site!r}; allowed: {list(allowed)}",
            code="command_not_allowed", status=403,
        )  # fmt: skip
    args = body.get("args", [])
    if (
        not isinstance(args, list)
        or len(args) > MAX_ARGS
        or not all(isinstance(a, str) and "\x00" not in a and len(a) <= MAX_ARG_CHARS for a in args)
    ):
        raise BadRequest(f"'args' must be a list of at most {MAX_ARGS} strings without NUL")
    timeout = body.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0
    ):
        raise BadRequest("'timeout' must be a whole number of seconds > 0")
    request_id = body.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or not 1 <= len(request_id) <= 200
    ):
        raise BadRequest("'request_id' must be a string of 1..200 characters")
    req = NewCalcRequest(
        user=user, site=site, command=command, args=tuple(args),
        inputs=parse_manifest(body.get("inputs"), "inputs"), timeout=timeout,
        request_id=request_id,
    )  # fmt: skip
    return req, conf.quota_bytes


def register_calc_routes(app: bottle.Bottle, deps: Deps, render: Render) -> None:
    store = deps.store

    @route(app, deps, "POST", "/api/v1/calcs")
    def create(p: Principal) -> tuple[int, dict[str, Any]]:
        req, quota = _parse_new_calc(deps, p.user, read_json())
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
        return {"name": entry.name, "received": entry.received, "complete": entry.complete}

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
