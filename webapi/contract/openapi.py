"""The OpenAPI 3.1 description of the HTTP contract (docs/api.md), built from the wire schemas.

Request and answer shapes come from webapi.contract.schemas (the parsers' own limits); the
statuses listed per route are those the server answers for that route (tests fuzz the running
server against this document with schemathesis and fail on any status or shape not listed).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from webapi.contract import schemas

Op = dict[str, Any]

_JSON = "application/json"
_WHY = {
    "200": "ok",
    "201": "created",
    "204": "nothing to answer",
    "206": "part of the file (Range)",
    "400": "bad request: the message says which field and how to fix it",
    "401": "missing, unknown or expired token",
    "403": "not allowed for this token's user",
    "404": "no such calc, file or route",
    "409": "the calc's state or lease does not allow this now",
    "411": "chunked body refused: send a Content-Length",
    "413": "body or files over the limit or quota",
    "415": "the body must be sent as application/json",
    "416": "the Range starts past the end of the file",
    "422": "the uploaded bytes do not match the declared sha256",
    "507": "the server's disk is full; nothing was lost, try again later",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_CALC_ID = {"name": "calc_id", "in": "path", "required": True, "schema": schemas.CALC_ID}
_NAME = {"name": "name", "in": "path", "required": True, "schema": schemas.FILE_NAME}
_SITE = {"name": "site", "in": "path", "required": True, "schema": schemas.SITE}
_OFFSET = {
    "name": "offset",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
    "description": "the bytes the server already holds (`received`); default 0",
}
_LEASE_Q = {
    "name": "lease",
    "in": "query",
    "required": True,
    "schema": schemas.LEASE_REF,
    "description": "the lease id returned by claim",
}
_RANGE = {
    "name": "Range",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^bytes=[0-9]{1,18}-[0-9]{0,18}$"},
}


def _native(
    summary: str,
    ok: dict[str, Any],
    errors: str,
    *,
    params: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    public: bool = False,
    links: dict[str, Any] | None = None,
    op_id: str,
) -> Op:
    """An operation of our own API: `ok` maps success statuses to content (None: no body);
    `errors` lists its error statuses, all answered with the Error object."""
    responses: dict[str, Any] = {}
    for status, content in ok.items():
        responses[status] = {"description": _WHY[status]}
        if content is not None:
            responses[status]["content"] = content
    if links:
        first = next(iter(ok))
        responses[first]["links"] = links
    for status in errors.split():
        responses[status] = {"$ref": "#/components/responses/Error"}
    op: Op = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": body}
    if public:
        op["security"] = []
    return op


def _calc_link(op_id: str, where: str = "$response.body#/id") -> dict[str, Any]:
    return {"operationId": op_id, "parameters": {"calc_id": where}}


_AFTER_CALC = {
    "GetCalc": _calc_link("getCalc"),
    "CancelCalc": _calc_link("cancelCalc"),
    "Requeue": _calc_link("requeueCalc"),
}
_AFTER_CLAIM = {
    "Heartbeat": _calc_link("heartbeat", "$response.body#/calc/id"),
    "Finish": _calc_link("finish", "$response.body#/calc/id"),
    "Unclaim": _calc_link("unclaim", "$response.body#/calc/id"),
    "GetCalc": _calc_link("getCalc", "$response.body#/calc/id"),
}
# Statuses every authenticated route with a JSON body can answer.
_BODY = "400 401 413"
_PUT_FILE = "400 401 403 404 409 411 413 422 507"
_GET_FILE = "400 401 403 404 409 416"
_FILE_PUT = "raw bytes appended at `offset` (must equal `received`)"
_CALC_OK = {"200": _json(_ref("Calc"))}

_PATHS: dict[str, dict[str, Op]] = {
    "/healthz": {
        "get": _native(
            "Liveness check",
            {"200": _json({"type": "object", "required": ["status"]})},
            "",
            public=True,
            op_id="healthz",
        )
    },
    "/metrics": {
        "get": _native(
            "Prometheus metrics (admin token; docs/operations.md)",
            {"200": {"text/plain": {"schema": {"type": "string"}}}},
            "401 403",
            op_id="metrics",
        )
    },
    "/api/v1/openapi.json": {
        "get": _native(
            "This document",
            {"200": _json({"type": "object", "required": ["openapi", "paths"]})},
            "",
            public=True,
            op_id="openapi",
        )
    },
    "/api/v1/login": {
        "post": _native(
            "Exchange user + password for a token",
            {"200": _json(_ref("LoginGrant"))},
            _BODY,
            body=_json(_ref("Login")),
            public=True,
            op_id="login",
        )
    },
    "/api/v1/calcs": {
        "post": _native(
            "Register a calc (201; 200: the calc of an earlier request with this request_id)",
            {"201": _json(_ref("Calc")), "200": _json(_ref("Calc"))},
            _BODY + " 403 409 507",
            body=_json(_ref("Registration")),
            links=_AFTER_CALC,
            op_id="createCalc",
        ),
        "get": _native(
            "List calcs (own; admin: all)",
            {"200": _json(_ref("CalcList"))},
            "400 401",
            params=(
                {"name": "state", "in": "query", "required": False, "schema": schemas.STATE},
                {"name": "site", "in": "query", "required": False, "schema": {"type": "string"}},
            ),
            op_id="listCalcs",
        ),
    },
    "/api/v1/calcs/{calc_id}": {
        "get": _native("One calc", _CALC_OK, "401 403 404", params=(_CALC_ID,), op_id="getCalc")
    },
    "/api/v1/calcs/{calc_id}/cancel": {
        "post": _native(
            "Cancel a calc",
            _CALC_OK,
            "401 403 404 409 507",
            params=(_CALC_ID,),
            op_id="cancelCalc",
        )
    },
    "/api/v1/calcs/{calc_id}/inputs/{name}": {
        "put": _native(
            f"Upload an input: {_FILE_PUT}",
            {"200": _json(_ref("FileAck"))},
            _PUT_FILE,
            params=(_CALC_ID, _NAME, _OFFSET),
            body=_BYTES,
            op_id="putInput",
        ),
        "get": _native(
            "Download an input",
            {"200": _BYTES, "206": _BYTES},
            _GET_FILE,
            params=(_CALC_ID, _NAME, _RANGE),
            op_id="getInput",
        ),
    },
    "/api/v1/calcs/{calc_id}/results/{name}": {
        "put": _native(
            f"Upload a result under the lease: {_FILE_PUT}",
            {"200": _json(_ref("FileAck"))},
            _PUT_FILE,
            params=(_CALC_ID, _NAME, _OFFSET, _LEASE_Q),
            body=_BYTES,
            op_id="putResult",
        ),
        "get": _native(
            "Download a result",
            {"200": _BYTES, "206": _BYTES},
            _GET_FILE,
            params=(_CALC_ID, _NAME, _RANGE),
            op_id="getResult",
        ),
    },
    "/api/v1/sites/{site}/claim": {
        "post": _native(
            "Long-poll for a queued calc of the site (204: none within `wait` seconds)",
            {"200": _json(_ref("ClaimGrant")), "204": None},
            _BODY + " 507",
            params=(_SITE,),
            body=_json(_ref("ClaimRequest")),
            body_required=False,
            links=_AFTER_CLAIM,
            op_id="claim",
        ),
    },
    "/api/v1/calcs/{calc_id}/unclaim": {
        "post": _native(
            "Give a claimed calc back before running it (no attempt lost)",
            _CALC_OK,
            _BODY + " 403 404 409 507",
            params=(_CALC_ID,),
            body=_json(_ref("Unclaim")),
            op_id="unclaim",
        )
    },
    "/api/v1/calcs/{calc_id}/heartbeat": {
        "post": _native(
            "Renew the lease; learn of a cancel",
            {"200": _json(_ref("HeartbeatReply"))},
            _BODY + " 403 404 409 507",
            params=(_CALC_ID,),
            body=_json(_ref("Heartbeat")),
            op_id="heartbeat",
        )
    },
    "/api/v1/calcs/{calc_id}/finish": {
        "post": _native(
            "Declare exit code and results",
            _CALC_OK,
            _BODY + " 403 404 409 507",
            params=(_CALC_ID,),
            body=_json(_ref("FinishReport")),
            op_id="finish",
        )
    },
    "/api/v1/admin/calcs/{calc_id}/requeue": {
        "post": _native(
            "Admin: run a calc again",
            _CALC_OK,
            "401 403 404 409 507",
            params=(_CALC_ID,),
            op_id="requeueCalc",
        )
    },
    "/api/v1/sites": {
        "get": _native(
            "Admin: sites, commands, poller last seen",
            {"200": _json(_ref("Sites"))},
            "401 403",
            op_id="listSites",
        )
    },
}

# The original MInt protocol served for unchanged MInt clients: its own JSON envelope for answers
# and errors alike ({"errors": [{"code", "message", …}]}), 403 for a missing or bad token (the
# original sat behind a gateway that answered so); see docs/mint-migration.md.
_MINT = (
    ("post", "add-calcinfo", "Register a calc with its files (base64 in JSON)"),
    ("post", "allow-wait-calc", "Let a registered calc be taken"),
    ("get", "calc-status", "status:none|completed|abnormal"),
    ("get", "calc-progress", "status:<progress>"),
    ("get", "get-calc-result", "The result files (base64 in JSON)"),
    ("post", "cancel-wait-calc", "Cancel a calc"),
    ("get", "calc-request", "Offer the oldest waiting calc of a site"),
    ("get", "calc-params", "Take a calc: its command and files"),
    ("post", "calc-params-complete", "Progress: complete send"),
    ("post", "calc-start", "Progress: running"),
    ("post", "calc-end", "Progress: calc end (completed or abnormal)"),
    ("post", "send-results", "Upload the result files (base64 in JSON)"),
    ("post", "end-send", "Progress: got return"),
)
MINT_PREFIX = "/mi-distcomp-api/"
_MINT_QUERY = {
    "calc-status": ("accept_id",),
    "calc-progress": ("accept_id",),
    "get-calc-result": ("accept_id",),
    "calc-request": ("site_id",),
    "calc-params": ("accept_id", "site_id"),
}
# Every original-protocol call can answer these (in the envelope); a POST also 415.
_MINT_STATUSES = "200 400 403 404 409 411 413 507"


def _mint_op(method: str, name: str, summary: str) -> Op:
    envelope = {"content": _json(_ref("MintEnvelope"))}
    statuses = _MINT_STATUSES + (" 415" if method == "post" else "")
    op: Op = {
        "operationId": "mint-" + name,
        "summary": f"Original MInt protocol: {summary}",
        "responses": {s: {"description": _WHY[s], **envelope} for s in statuses.split()},
        "parameters": [
            {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
            for q in _MINT_QUERY.get(name, ())
        ],
    }
    if method == "post":
        op["requestBody"] = {"required": True, "content": _json({"type": "object"})}
    return op


for _method, _name, _summary in _MINT:
    _PATHS[f"{MINT_PREFIX}{_name}"] = {_method: _mint_op(_method, _name, _summary)}

_DOC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mint-extcomp WebAPI", "version": "1", "description": "See docs/api.md."},
    "security": [{"bearer": []}],
    "paths": _PATHS,
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Error": {"description": "error", "content": _json(_ref("Error"))},
        },
        "schemas": schemas.COMPONENTS,
    },
}


def openapi_document(
    mint_bodies: Mapping[str, dict[str, Any]] | None = None,
    mint_queries: Mapping[str, Mapping[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A copy of the document (callers may not mutate the shared one). `mint_bodies` maps an
    original-protocol call to its request body's schema, `mint_queries` a GET call to its query
    parameters' schemas: this package may not import webapi.mint, so the server's composition
    root passes them in (webapi.server.app); without them those are only "an object" and free
    strings."""
    doc = copy.deepcopy(_DOC)
    for name, schema in (mint_bodies or {}).items():
        op = doc["paths"][f"{MINT_PREFIX}{name}"]["post"]
        op["requestBody"]["content"] = _json(copy.deepcopy(schema))
    for name, params in (mint_queries or {}).items():
        op = doc["paths"][f"{MINT_PREFIX}{name}"]["get"]
        op["parameters"] = [
            {"name": q, "in": "query", "required": False, "schema": copy.deepcopy(schema)}
            for q, schema in params.items()
        ]
    return doc
