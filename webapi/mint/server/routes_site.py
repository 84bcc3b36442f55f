"""Poller-side routes of the original protocol (calc-request … end-send) over our store and leases.

calc-request only offers a calc (the original poller ignores some answers); calc-params claims
it under a legacy lease; the later calls move its progress; send-results declares and stores the
results, which ends the calc (succeeded after "calc end", failed after "abnormal").
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import bottle

from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileEntry
from webapi.errors import ApiError, Conflict, Forbidden
from webapi.mint.codec import bodies
from webapi.mint.codec.bodies import FileField, FilePiece, Piece
from webapi.mint.codec.calls import parse_call
from webapi.mint.codec.ids import accept_id_of
from webapi.mint.codec.mime import sniff
from webapi.mint.codec.wire import LOG_NAMES, NOTHING_TO_DO
from webapi.mint.server import mapping
from webapi.mint.server.documents import bare_name, parse_results
from webapi.mint.server.envelope import Body, failure, mint_route, ok
from webapi.mint.server.payloads import Budget, Staging, parse_body, stream_json
from webapi.mint.server.routes_workflow import check_quota_early, find_calc, store_staged
from webapi.server.auth import Principal
from webapi.server.config import ServerConfig
from webapi.server.routing import Deps, Stream, peer_alive
from webapi.store.base import ClaimTerms

log = logging.getLogger(__name__)


def _site(deps: Deps, site: Any) -> tuple[ServerConfig, str]:
    conf = deps.config.get()  # re-read at calc-request, as the original did
    if not isinstance(site, str) or site not in conf.sites:
        raise ApiError(
            f"unknown site {site!r}: this server serves sites {sorted(conf.sites)}",
            code="unknown_site",
            status=400,
        )
    return conf, site


def _poller_calc(deps: Deps, p: Principal, accept_id: Any, site: Any) -> Calc:
    """The calc, if it belongs to this poller's user and site (nothing is told otherwise)."""
    _conf, site = _site(deps, site)
    calc = find_calc(deps, accept_id)
    if calc.user != p.user:
        raise Forbidden(f"calc {accept_id} was registered by another user; not for this token")
    if calc.site != site:
        raise Forbidden(f"calc {accept_id} is not a calc of site {site!r}")
    return calc


def _our_lease(calc: Calc) -> str:
    """The lease id of a calc taken through calc-params; Conflict if it is not (any more)."""
    aid = accept_id_of(calc.id)
    if calc.state is CalcState.CANCELLED:
        raise Conflict(f"calc {aid} was cancelled ({calc.reason}): stop working on it")
    if calc.state is not CalcState.RUNNING or calc.lease is None:
        raise Conflict(f"calc {aid} is {calc.state}, not running: take it with calc-params first")
    if calc.lease.poller != mapping.LEGACY_POLLER:
        raise Conflict(f"calc {aid} is being run by poller {calc.lease.poller!r}")
    return calc.lease.id


def _advance(deps: Deps, calc: Calc, progress: str | None) -> Calc:
    conf = deps.config.current
    return deps.store.heartbeat(
        calc.id, _our_lease(calc), progress, mapping.legacy_lease_seconds(conf, calc.site)
    )


def _in_order(calc: Calc, call: str, progress: str) -> bool:
    """Whether `call`, which moves the calc to `progress`, repeats the step the calc is already
    at (an answer that was lost: answer it again, change nothing). Conflict if it comes out of
    the original's order: back, or past a step that is required."""
    aid = accept_id_of(calc.id)
    if calc.state in (CalcState.SUCCEEDED, CalcState.FAILED):
        if call == "end-send":
            return True
        raise Conflict(
            f"calc {aid} is over ({calc.state}; progress {mapping.GOT!r}): send end-send next, "
            "if not done yet; nothing changed"
        )
    _our_lease(calc)
    now = mapping.progress_of(calc)
    if call == "calc-end" and now == mapping.CALC_END:
        if calc.progress == progress:
            return True
        said = "abnormal" if (calc.progress or "").endswith(mapping.ABNORMAL) else "calc end"
        raise Conflict(
            f"calc {aid} already ended with result {said!r}; a different result is refused: "
            f"send {mapping.NEXT_CALL[now]} next; nothing changed"
        )
    if now == progress:
        return True
    if now in mapping.FOLLOWS[call]:
        return False
    following = mapping.NEXT_CALL[now]
    target = progress.removesuffix(mapping.ABNORMAL)
    if mapping.PROGRESS.index(now) > mapping.PROGRESS.index(target):
        raise Conflict(
            f"calc {aid} is already at {now!r}: progress never goes back; "
            f"send {following} next; nothing changed"
        )
    raise Conflict(
        f"calc {aid} is at {now!r}, and {call} needs {mapping.NEEDS[call]}: "
        f"send {following} next; nothing changed"
    )


def _confirm(deps: Deps, calc_id: str, lease_id: str) -> None:
    """The whole calc-params answer went out: the poller has the calc."""
    try:
        calc = deps.store.get(calc_id)
        if calc.lease is not None and calc.lease.id == lease_id and not calc.lease.confirmed:
            _advance(deps, calc, None)  # None: the progress stays whatever it is by now
    except ApiError as exc:  # cancelled or taken back meanwhile: nothing to confirm
        log.info("calc-params of %s: not confirmed (%s)", calc_id, exc.message)


def _calc_info_pieces(deps: Deps, calc: Calc) -> list[Piece]:
    """`{"calc-info": {…}}` as registered, the input files as base64 from disk."""
    meta = calc.meta or {}
    types = meta.get("types") or {}
    files = []
    for entry in calc.inputs:
        mime = types.get(entry.name)
        if mime is None:  # registered through the native API: name its type ourselves
            fh, _size = deps.store.open_file(calc.id, "inputs", entry.name)
            with fh:
                mime = list(sniff(fh, entry.name))
        piece = FilePiece(entry.size, _opener(deps, calc.id, entry.name)) if entry.size else None
        files.append(FileField(entry.name, piece, mime[0], mime[1]))
    wanted = mapping.wanted_results(calc) if calc.meta else list(LOG_NAMES)
    return bodies.calc_info(
        command=calc.command,
        site=calc.site,
        parameters=meta.get("parameters", ""),
        files=files,
        wanted=wanted,
    )


def _opener(deps: Deps, calc_id: str, name: str) -> Any:
    return lambda: deps.store.open_file(calc_id, "inputs", name)


def register_site_routes(app: bottle.Bottle, deps: Deps) -> None:
    store = deps.store
    # Checking a progress call's order and recording its progress is one step: two calls racing
    # (a retry overtaking its original, two verdicts) must not both pass the check. The store
    # belongs to this one server process, so a lock here is enough.
    order = threading.Lock()

    def move(calc: Calc, call: str, progress: str) -> None:
        """Record `progress` if `call` is next in order; nothing if it repeats the last step."""
        with order:
            calc = store.get(calc.id)
            if not _in_order(calc, call, progress):
                _advance(deps, calc, progress)

    @mint_route(app, deps, "GET", "calc-request")
    def calc_request(p: Principal, _body: Body) -> dict[str, Any]:
        conf, site = _site(deps, bottle.request.query.get("site_id"))
        fits = mapping.fits_original_poller(conf, site)
        calc = store.peek(site=site, user=p.user, poller=mapping.LEGACY_POLLER, accept=fits)
        if calc is None:
            return failure(NOTHING_TO_DO, f"calc-request: no calc is waiting for site {site}")
        return ok("calc-request: a calc is waiting", accept_id=accept_id_of(calc.id))

    @mint_route(app, deps, "GET", "calc-params")
    def calc_params(p: Principal, _body: Body) -> Stream:
        query = bottle.request.query
        calc = _poller_calc(deps, p, query.get("accept_id"), query.get("site_id"))
        if calc.state is CalcState.QUEUED:
            conf = deps.config.current
            fits = mapping.fits_original_poller(conf, calc.site)
            if not fits(calc):
                raise Conflict(
                    f"calc {accept_id_of(calc.id)} cannot be run by this poller: it has "
                    "arguments or its command is no longer on the site's list"
                )
            # Until the answer has gone out whole (or the poller's next progress call), the
            # claim is unconfirmed: a poller that never got it gives the calc back by timing out.
            terms = ClaimTerms(
                accept=lambda c: c.id == calc.id,
                confirm_seconds=conf.legacy_confirm_seconds,
                still_there=peer_alive(bottle.request.environ),
            )
            claimed = store.claim(
                site=calc.site, user=p.user, poller=mapping.LEGACY_POLLER, wait=0, terms=terms
            )
            if claimed is None:
                raise Conflict(f"calc {accept_id_of(calc.id)} was just taken by another poller")
            calc = claimed
        else:
            # Original pollers of one user cannot be told apart: a calc already taken is never
            # handed out again, or two of them would run it (a poller whose answer was lost gets
            # it back from calc-request once its unconfirmed claim times out).
            _our_lease(calc)
            raise Conflict(
                f"calc-params: calc {accept_id_of(calc.id)} was already taken by a poller; "
                "each calc goes to one poller only"
            )
        assert calc.lease is not None
        pieces = _calc_info_pieces(deps, calc)
        lease_id = calc.lease.id
        return stream_json(pieces, on_sent=lambda: _confirm(deps, calc.id, lease_id))

    def step(name: str, progress: str) -> None:
        @mint_route(app, deps, "POST", name)
        def handler(p: Principal, body: Body) -> dict[str, Any]:
            doc = parse_call(name, body.json())
            calc = _poller_calc(deps, p, doc["accept_id"], doc["site_id"])
            move(calc, name, progress)
            return ok(f"{name}: progress is {progress}")

    step("calc-params-complete", mapping.COMPLETE_SEND)
    step("calc-start", mapping.RUNNING)

    @mint_route(app, deps, "POST", "calc-end")
    def calc_end(p: Principal, body: Body) -> dict[str, Any]:
        doc = parse_call("calc-end", body.json())
        calc = _poller_calc(deps, p, doc["accept_id"], doc["site_id"])
        suffix = mapping.ABNORMAL if doc["result"] == "abnormal" else ""
        move(calc, "calc-end", mapping.CALC_END + suffix)
        return ok(f"calc-end: status is {'abnormal' if suffix else 'completed'}")

    @mint_route(app, deps, "POST", "send-results")
    def send_results(p: Principal, body: Body) -> dict[str, Any]:
        conf = deps.config.get()
        check_quota_early(body, conf.quota_bytes, "send-results")
        with Staging(conf.data_dir, Budget(conf.quota_bytes, "send-results")) as staging:
            checked: list[bool] = []

            def sink_for(path: tuple[str | int, ...], objects: list[dict[str, Any]]) -> Any:
                if len(path) != 3 or path[0] != "result_files" or path[2] != "content":
                    return None
                if not isinstance(path[1], str):
                    return None  # a list, not an object: parse_results says so
                name = bare_name(path[1], "send-results")
                top = objects[0] if objects else {}
                if not checked and "accept_id" in top and "site_id" in top:
                    # Refuse a wrong-state upload before its files are read.
                    parse_call("send-results", top)
                    calc = _poller_calc(deps, p, top["accept_id"], top["site_id"])
                    _in_order(calc, "send-results", mapping.GETTING)
                    checked.append(True)
                return staging.sink(f"result {name!r}")

            doc = parse_call("send-results", parse_body(body.read, sink_for))
            sent = parse_results(doc)  # the body's shape first (400), then the calc's state
            with order:
                calc = _poller_calc(deps, p, doc["accept_id"], doc["site_id"])
                _in_order(calc, "send-results", mapping.GETTING)  # at it already: a retry
                abnormal = (calc.progress or "").endswith(mapping.ABNORMAL)
                getting = mapping.GETTING + (mapping.ABNORMAL if abnormal else "")
                calc = _advance(deps, calc, getting)
            notes = ["the program ended abnormally (reported by the poller)"] if abnormal else []
            if sent.missing:
                notes.append(
                    "missing results: "
                    + ", ".join(f"{n} ({why})" for n, why in sent.missing.items())
                )
            reason = "; ".join(notes) or None
            manifest = tuple(FileEntry(n, f.size, f.sha256) for n, f in sent.files.items())
            lease = _our_lease(calc)
            calc = store.finish(
                calc.id,
                lease_id=lease,
                exit_code=1 if abnormal else 0,
                reason=reason,
                results=manifest,
                quota_bytes=conf.quota_bytes,
                missing=sent.missing,
            )
            store_staged(deps, calc, "results", sent.files, lease)
        return ok(f"send-results: {len(sent.files)} file(s) stored")

    @mint_route(app, deps, "POST", "end-send")
    def end_send(p: Principal, body: Body) -> dict[str, Any]:
        doc = parse_call("end-send", body.json())
        calc = _poller_calc(deps, p, doc["accept_id"], doc["site_id"])
        _in_order(calc, "end-send", mapping.GOT)  # it changes nothing: only checked
        return ok(f"end-send: progress is {mapping.GOT}")
