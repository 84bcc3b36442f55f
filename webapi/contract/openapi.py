"""The OpenAPI 3.1 description of the HTTP contract (docs/api.md), kept as plain data."""

from __future__ import annotations

import copy
from typing import Any

_ERR = {"$ref": "#/components/responses/Error"}
_CALC = {"application/json": {"schema": {"$ref": "#/components/schemas/Calc"}}}
_OBJ = {"application/json": {"schema": {"type": "object"}}}
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _p(name: str, where: str = "path", schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema or {"type": "string"},
    }


def _op(
    summary: str,
    *,
    params: tuple[str, ...] = (),
    query: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    ok: dict[str, Any] | None = None,
    status: str = "200",
    public: bool = False,
    extra: dict[str, Any] | None = None,
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [_p(n) for n in params]
        + [_p(q, "query") for q in query]
        + [_p(h, "header") for h in headers],
        "responses": {status: {"description": "ok", "content": ok or _OBJ}, "default": _ERR},
    }
    if extra:
        op["responses"].update(extra)
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if public:
        op["security"] = []
    return op


_FILE_PUT = "raw bytes appended at `offset` (must equal `received`)"

_DOC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mint-extcomp WebAPI", "version": "1", "description": "See docs/api.md."},
    "security": [{"bearer": []}],
    "paths": {
        "/healthz": {"get": _op("Liveness check", public=True)},
        "/metrics": {
            "get": _op(
                "Prometheus metrics (admin token; docs/operations.md)",
                ok={"text/plain": {"schema": {"type": "string"}}},
            )
        },
        "/api/v1/openapi.json": {"get": _op("This document", public=True)},
        "/api/v1/login": {
            "post": _op("Exchange user + password for a token", body=_OBJ, public=True)
        },
        "/api/v1/calcs": {
            "post": _op(
                "Register a calc",
                body=_OBJ,
                ok=_CALC,
                status="201",
                extra={"200": {"description": "same request_id: the existing calc"}},
            ),
            "get": _op("List calcs (own; admin: all)", query=("state", "site")),
        },
        "/api/v1/calcs/{calc_id}": {"get": _op("One calc", params=("calc_id",), ok=_CALC)},
        "/api/v1/calcs/{calc_id}/cancel": {
            "post": _op("Cancel a calc", params=("calc_id",), ok=_CALC)
        },
        "/api/v1/calcs/{calc_id}/inputs/{name}": {
            "put": _op(
                f"Upload an input: {_FILE_PUT}",
                params=("calc_id", "name"),
                query=("offset",),
                body=_BYTES,
            ),
            "get": _op(
                "Download an input", params=("calc_id", "name"), ok=_BYTES, headers=("Range",)
            ),
        },
        "/api/v1/calcs/{calc_id}/results/{name}": {
            "put": _op(
                f"Upload a result: {_FILE_PUT}",
                params=("calc_id", "name"),
                query=("offset", "lease"),
                body=_BYTES,
            ),
            "get": _op(
                "Download a result", params=("calc_id", "name"), ok=_BYTES, headers=("Range",)
            ),
        },
        "/api/v1/sites/{site}/claim": {
            "post": _op(
                "Long-poll for a queued calc of the site",
                params=("site",),
                body=_OBJ,
                extra={"204": {"description": "nothing queued within `wait` seconds"}},
            ),
        },
        "/api/v1/calcs/{calc_id}/unclaim": {
            "post": _op(
                "Give a claimed calc back before running it (no attempt lost)",
                params=("calc_id",),
                body=_OBJ,
                ok=_CALC,
            )
        },
        "/api/v1/calcs/{calc_id}/heartbeat": {
            "post": _op("Renew the lease; learn of a cancel", params=("calc_id",), body=_OBJ)
        },
        "/api/v1/calcs/{calc_id}/finish": {
            "post": _op("Declare exit code and results", params=("calc_id",), body=_OBJ, ok=_CALC)
        },
        "/api/v1/admin/calcs/{calc_id}/requeue": {
            "post": _op("Admin: run a calc again", params=("calc_id",), ok=_CALC)
        },
        "/api/v1/sites": {"get": _op("Admin: sites, commands, poller last seen")},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Error": {
                "description": "error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "offset": {"type": "integer"},
                },
            },
            "File": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "size": {"type": "integer"},
                    "sha256": {"type": "string"},
                    "received": {"type": "integer"},
                },
            },
            "Calc": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "user": {"type": "string"},
                    "site": {"type": "string"},
                    "command": {"type": "string"},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "state": {
                        "enum": [
                            "registered",
                            "queued",
                            "running",
                            "succeeded",
                            "failed",
                            "cancelled",
                        ]
                    },
                    "reason": {"type": ["string", "null"]},
                    "created": {"type": "string", "format": "date-time"},
                    "updated": {"type": "string", "format": "date-time"},
                    "timeout": {"type": ["integer", "null"]},
                    "attempts": {"type": "integer"},
                    "exit_code": {"type": ["integer", "null"]},
                    "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/File"}},
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/File"}},
                    "lease": {"type": ["object", "null"]},
                    "progress": {"type": ["string", "null"]},
                },
            },
        },
    },
}


# The original MInt protocol served for unchanged MInt clients: its own JSON envelope
# ({"errors": [{"code", "message", …}]}); see docs/mint-migration.md.
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
_QUERY = {
    "calc-status": ("accept_id",),
    "calc-progress": ("accept_id",),
    "get-calc-result": ("accept_id",),
    "calc-request": ("site_id",),
    "calc-params": ("accept_id", "site_id"),
}
for _method, _name, _summary in _MINT:
    _DOC["paths"][f"/mi-distcomp-api/{_name}"] = {
        _method: _op(
            f"Original MInt protocol: {_summary}",
            query=_QUERY.get(_name, ()),
            body=_OBJ if _method == "post" else None,
        )
    }


def openapi_document() -> dict[str, Any]:
    """A copy of the document (callers may not mutate the shared one)."""
    return copy.deepcopy(_DOC)
