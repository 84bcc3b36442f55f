"""Workflow-side routes of the original protocol (add-calcinfo … get-calc-result) over our store."""

from __future__ import annotations

import contextlib
from typing import Any

import bottle

from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileEntry
from webapi.errors import ApiError, Conflict, NotFound, TooLarge
from webapi.mint.codec import bodies
from webapi.mint.codec.b64 import DecodedFile, b64_length
from webapi.mint.codec.bodies import FileField, FilePiece, Piece
from webapi.mint.codec.calls import parse_call
from webapi.mint.codec.ids import accept_id_of, calc_id_of
from webapi.mint.codec.mime import sniff
from webapi.mint.server import mapping
from webapi.mint.server.documents import bare_name, check_site_command, parse_calc_info
from webapi.mint.server.envelope import Body, mint_route, ok
from webapi.mint.server.payloads import Budget, Staging, parse_body, stream_json
from webapi.server.auth import Principal
from webapi.server.routes_workflow import check_someone_serves
from webapi.server.routing import Deps, Stream, require_owner
from webapi.store.base import NewCalcRequest

# Room for everything but the files in a body: names, types, parameters, JSON syntax.
BODY_SLACK = 4 << 20


def find_calc(deps: Deps, accept_id: Any, *, status_word: bool = False) -> Calc:
    """The calc an accept_id names; NotFound with a colon-bearing message otherwise."""
    calc_id = calc_id_of(accept_id)
    where = "status:unknown: " if status_word else ""
    if calc_id is None:
        raise NotFound(f"{where}accept_id {accept_id!r} is not a calc id (expected a uuid)")
    try:
        return deps.store.get(calc_id)
    except NotFound:
        raise NotFound(f"{where}no calc with accept_id {accept_id} (never registered)") from None


def check_quota_early(body: Body, quota: int, what: str) -> None:
    """Refuse at once a body that cannot fit: its base64 alone is over the quota."""
    if quota and body.length is not None and body.length > b64_length(quota) + BODY_SLACK:
        raise TooLarge(
            f"{what}: the body has {body.length} bytes, more than files of the quota "
            f"({quota} bytes) can take in base64; nothing was stored"
        )


def store_staged(
    deps: Deps, calc: Calc, kind: str, files: dict[str, DecodedFile], lease: str | None
) -> None:
    """Move staged files into the calc (renamed, not copied: the staging dir is in the data dir;
    their sha256 was computed as they were decoded), the calc's state re-checked by the store."""
    entries = calc.inputs if kind == "inputs" else calc.results
    for entry in entries:
        staged = files.get(entry.name)
        if staged is None or entry.complete:
            continue  # empty files need no upload; a retried send-results may be half stored
        deps.store.adopt_file(
            calc.id,
            kind,  # type: ignore[arg-type]
            entry.name,
            staged.path,
            staged.sha256,
            lease,
        )


def _result_pieces(deps: Deps, calc: Calc) -> list[Piece]:
    """`{"name": {"content": …, "mimetype1": …, "mimetype2": …}, …}` as pieces."""
    sizes = {f.name: f.size for f in calc.results}
    fields = []
    for name in mapping.wanted_results(calc):
        source = mapping.result_source(calc, name)
        if source is None:
            why = (calc.missing or {}).get(
                name
            ) or f"{name}: {calc.reason or 'no such result file'}"
            fields.append(bodies.missing(name, why))
            continue
        fh, _size = deps.store.open_file(calc.id, "results", source)
        with contextlib.closing(fh):
            mime1, mime2 = sniff(fh, name)
        piece = FilePiece(sizes[source], _opener(deps, calc.id, "results", source))
        fields.append(FileField(name, piece, mime1, mime2))
    return bodies.result_files(fields)


def _opener(deps: Deps, calc_id: str, kind: str, name: str) -> Any:
    return lambda: deps.store.open_file(calc_id, kind, name)  # type: ignore[arg-type]


def register_workflow_routes(app: bottle.Bottle, deps: Deps) -> None:
    store = deps.store

    @mint_route(app, deps, "POST", "add-calcinfo")
    def add_calcinfo(p: Principal, body: Body) -> dict[str, Any]:
        conf = deps.config.get()  # re-read at each registration, as the original did
        check_quota_early(body, conf.quota_bytes, "add-calcinfo")
        budget = Budget(conf.quota_bytes, "add-calcinfo")
        with Staging(conf.data_dir, budget) as staging:

            def sink_for(path: tuple[str | int, ...], objects: list[dict[str, Any]]) -> Any:
                if (
                    len(path) == 4
                    and path[:2] == ("calc-info", "parameter_files")
                    and isinstance(path[2], str)  # else not an object: parse_calc_info says so
                    and path[3] == 0
                ):
                    name = bare_name(path[2], "parameter_files")
                    info = objects[1] if len(objects) > 1 else {}
                    if "remote-site" in info and "command" in info:  # refuse before the files
                        site, _command = check_site_command(
                            conf, info["remote-site"], info["command"]
                        )
                        check_someone_serves(deps, p.user, site)
                    return staging.sink(f"parameter file {name!r}")
                return None

            info = parse_calc_info(parse_body(body.read, sink_for), conf)
            check_someone_serves(deps, p.user, info.site)
            manifest = tuple(FileEntry(n, f.size, f.sha256) for n, f in info.files.items())
            req = NewCalcRequest(
                user=p.user,
                site=info.site,
                command=info.command,
                args=(),
                inputs=manifest,
                held=True,
                meta=info.meta,
            )
            calc, _new = store.create(req, quota_bytes=conf.quota_bytes)
            try:
                store_staged(deps, calc, "inputs", info.files, None)
            except BaseException as exc:
                why = exc.message if isinstance(exc, ApiError) else "server error"
                with contextlib.suppress(ApiError):
                    store.cancel(calc.id, f"registration through add-calcinfo failed: {why}")
                raise
        return ok("add-calcinfo: accepted", accept_id=accept_id_of(calc.id))

    @mint_route(app, deps, "POST", "allow-wait-calc")
    def allow_wait_calc(p: Principal, body: Body) -> dict[str, Any]:
        doc = parse_call("allow-wait-calc", body.json())
        calc = find_calc(deps, doc["accept_id"])
        require_owner(p, calc)
        calc = store.release(calc.id)
        return ok(f"allow-wait-calc: calc is {calc.state}")

    @mint_route(app, deps, "GET", "calc-status", status_word=True)
    def calc_status(p: Principal, _body: Body) -> dict[str, Any]:
        calc = find_calc(deps, bottle.request.query.get("accept_id"), status_word=True)
        require_owner(p, calc)
        if calc.state is CalcState.CANCELLED:
            raise Conflict(f"status:cancelled: {calc.reason or 'the calc was cancelled'}")
        return ok(f"status:{mapping.status_of(calc)}")

    @mint_route(app, deps, "GET", "calc-progress", status_word=True)
    def calc_progress(p: Principal, _body: Body) -> dict[str, Any]:
        calc = find_calc(deps, bottle.request.query.get("accept_id"), status_word=True)
        require_owner(p, calc)
        if calc.state is CalcState.CANCELLED:
            raise Conflict(f"status:cancelled: {calc.reason or 'the calc was cancelled'}")
        return ok(f"status:{mapping.progress_of(calc)}")

    @mint_route(app, deps, "GET", "get-calc-result")
    def get_calc_result(p: Principal, _body: Body) -> Stream:
        calc = find_calc(deps, bottle.request.query.get("accept_id"))
        require_owner(p, calc)
        if calc.state not in (CalcState.SUCCEEDED, CalcState.FAILED):
            raise Conflict(
                f"get-calc-result: calc is {calc.state} "
                f"(progress {mapping.progress_of(calc)!r}): no results yet"
            )
        head = b'{"errors": [{"code": 200, "message": "get-calc-result: ok", "result-info": '
        pieces = [head + b'{"result_files": ', *_result_pieces(deps, calc), b"}}]}"]
        return stream_json(pieces)

    @mint_route(app, deps, "POST", "cancel-wait-calc")
    def cancel_wait_calc(p: Principal, body: Body) -> dict[str, Any]:
        doc = parse_call("cancel-wait-calc", body.json())  # `delete`: "force", "" or null
        calc = find_calc(deps, doc["accept_id"])
        require_owner(p, calc)
        if calc.state in (CalcState.SUCCEEDED, CalcState.FAILED):
            return ok(f"cancel-wait-calc: the calc had already ended ({calc.state}); kept")
        calc = store.cancel(calc.id, f"cancelled by {p.user} (cancel-wait-calc)")
        return ok(f"cancel-wait-calc: calc is {calc.state}")
