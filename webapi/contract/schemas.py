"""JSON Schemas of the wire shapes, built from the limits and patterns the parsers check with.

Every bound here is a constant of webapi.contract.calc or .names that the `from_json` parsers
enforce, so the OpenAPI document cannot drift from what the server accepts and answers;
tests/webapi/test_openapi.py checks each schema's keys against the dataclass it describes.
"""

from __future__ import annotations

import re
from typing import Any

from webapi.contract.calc import (
    CALC_ID_RE,
    LEASE_ID_RE,
    MAX_ARG_CHARS,
    MAX_ARGS,
    MAX_POLLER_COMMANDS,
    MAX_PROGRESS,
    MAX_REASON,
    POLLER_RE,
    SHA256_RE,
    CalcState,
    ClaimRequest,
    FinishReport,
    Heartbeat,
    Registration,
    Unclaim,
)
from webapi.contract.names import COMMAND_RE, MAX_NAME_BYTES, MAX_PART_BYTES, SITE_RE

Schema = dict[str, Any]


def pattern(regex: re.Pattern[str]) -> str:
    """A Python pattern of ours as a JSON Schema (ECMA 262) pattern: ours use only the common
    subset (anchors, classes, counted repeats), so the text carries over unchanged."""
    return regex.pattern


# One part of a file name: what names.check_name allows (no '.', '..', no '/', letters, digits,
# '._+-' and any non-ASCII letter). The schema bounds characters, the parser bytes; ASCII-only
# names (what a generator produces most) agree exactly.
_PART = rf"(?!\.\.?(?:/|$))[A-Za-z0-9._+\-\u00c0-\uffff]{{1,{MAX_PART_BYTES}}}"
FILE_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_BYTES,
    "pattern": f"^{_PART}(?:/{_PART})*$",
}
# A file name without a directory part (the original protocol's names: its clients write them
# straight into one directory).
BARE_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_PART_BYTES,
    "pattern": f"^{_PART}$",
}
CALC_ID: Schema = {"type": "string", "pattern": pattern(CALC_ID_RE)}
LEASE_ID: Schema = {"type": "string", "pattern": pattern(LEASE_ID_RE)}
SITE: Schema = {"type": "string", "pattern": pattern(SITE_RE)}
SHA256: Schema = {"type": "string", "pattern": pattern(SHA256_RE)}
TIME: Schema = {"type": "string", "format": "date-time"}
STATE: Schema = {"type": "string", "enum": [str(s) for s in CalcState]}
# The lease id a poller sends back: any non-empty string is parsed, a wrong one is a 409.
LEASE_REF: Schema = {"type": "string", "minLength": 1, "maxLength": 1 << 16}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(
    props: dict[str, Schema], required: tuple[str, ...] = (), *, closed: bool = True
) -> Schema:
    out: Schema = {"type": "object", "properties": props, "required": list(required)}
    if closed:
        out["additionalProperties"] = False
    return out


MANIFEST_ENTRY = _obj(
    {"name": FILE_NAME, "size": {"type": "integer", "minimum": 0}, "sha256": SHA256},
    ("name", "size", "sha256"),
)
MANIFEST: Schema = {"type": "array", "items": {"$ref": "#/components/schemas/ManifestEntry"}}
FILE = _obj(
    {
        "name": FILE_NAME,
        "size": {"type": "integer", "minimum": 0},
        "sha256": SHA256,
        "received": {"type": "integer", "minimum": 0},
    },
    ("name", "size", "sha256", "received"),
)
LEASE_VIEW = _obj(
    {"poller": {"type": "string", "pattern": pattern(POLLER_RE)}, "expires": TIME},
    ("poller", "expires"),
)
_FILES: Schema = {"type": "array", "items": {"$ref": "#/components/schemas/File"}}
CALC = _obj(
    {
        "id": CALC_ID,
        "user": {"type": "string"},
        "site": SITE,
        "command": {"type": "string", "minLength": 1},
        "args": {"type": "array", "items": {"type": "string"}},
        "state": STATE,
        "reason": _nullable({"type": "string"}),
        "created": TIME,
        "updated": TIME,
        "timeout": _nullable({"type": "integer", "minimum": 1}),
        "attempts": {"type": "integer", "minimum": 0},
        "exit_code": _nullable({"type": "integer"}),
        "inputs": _FILES,
        "results": _FILES,
        "lease": _nullable({"$ref": "#/components/schemas/LeaseView"}),
        "progress": _nullable({"type": "string"}),
    },
    (
        "id", "user", "site", "command", "args", "state", "reason", "created", "updated",
        "timeout", "attempts", "exit_code", "inputs", "results", "lease", "progress",
    ),
)  # fmt: skip

REGISTRATION = _obj(
    {
        "site": SITE,
        "command": {"type": "string", "minLength": 1},
        "args": {
            "type": "array",
            "maxItems": MAX_ARGS,
            "items": {"type": "string", "maxLength": MAX_ARG_CHARS, "pattern": "^[^\\x00]*$"},
        },
        "inputs": _nullable(MANIFEST),
        "timeout": _nullable({"type": "integer", "minimum": 1, "maximum": 1 << 62}),
        "request_id": _nullable({"type": "string", "minLength": 1, "maxLength": 200}),
    },
    ("site", "command"),
)
# Every key is optional: a claim without a body asks as the token's user, waiting the default.
CLAIM = _obj(
    {
        "poller": {"type": "string", "pattern": pattern(POLLER_RE)},
        "wait": {"type": "number", "minimum": 0},
        "confirm": {"type": "boolean"},
        "commands": _nullable(
            {
                "type": "array",
                "maxItems": MAX_POLLER_COMMANDS,
                "items": {"type": "string", "pattern": pattern(COMMAND_RE)},
            }
        ),
    },
    closed=False,
)
HEARTBEAT = _obj(
    {"lease": LEASE_REF, "progress": _nullable({"type": "string", "maxLength": MAX_PROGRESS})},
    ("lease",),
    closed=False,
)
FINISH = _obj(
    {
        "lease": LEASE_REF,
        "exit_code": {"type": "integer", "minimum": 0, "maximum": 255},
        "results": _nullable(MANIFEST),
        "reason": _nullable({"type": "string", "maxLength": MAX_REASON}),
    },
    ("lease", "exit_code"),
    closed=False,
)
UNCLAIM = _obj(
    {"lease": LEASE_REF, "reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON}},
    ("lease", "reason"),
    closed=False,
)
LOGIN = _obj(
    {"user": {"type": "string"}, "password": {"type": "string"}},
    ("user", "password"),
    closed=False,
)
LOGIN_GRANT = _obj(
    {"token": {"type": "string"}, "expires": _nullable({"type": "string"})}, ("token", "expires")
)
CLAIM_GRANT = _obj(
    {
        "calc": {"$ref": "#/components/schemas/Calc"},
        "lease": _obj(
            {
                "id": LEASE_ID,
                "expires": TIME,
                "heartbeat": {"type": "number", "exclusiveMinimum": 0},
            },
            ("id", "expires", "heartbeat"),
        ),
    },
    ("calc", "lease"),
)
HEARTBEAT_REPLY = _obj(
    {"cancel": {"type": "boolean"}, "expires": _nullable(TIME)}, ("cancel", "expires")
)
FILE_ACK = _obj(
    {
        "name": FILE_NAME,
        "received": {"type": "integer", "minimum": 0},
        "complete": {"type": "boolean"},
    },
    ("name", "received", "complete"),
)
CALC_LIST = _obj(
    {"calcs": {"type": "array", "items": {"$ref": "#/components/schemas/Calc"}}}, ("calcs",)
)
SITES = _obj(
    {
        "sites": {
            "type": "array",
            "items": _obj(
                {
                    "name": SITE,
                    "commands": {"type": "array", "items": {"type": "string"}},
                    "lease_seconds": {"type": "integer", "minimum": 1},
                    "poller_last_seen": _nullable(
                        _obj(
                            {"poller": {"type": "string"}, "at": TIME, "ago": {"type": "integer"}},
                            ("poller", "at", "ago"),
                        )
                    ),
                },
                ("name", "commands", "lease_seconds", "poller_last_seen"),
                closed=False,
            ),
        }
    },
    ("sites",),
)
ERROR = _obj(
    {
        "error": {"type": "string", "pattern": "^[a-z_]+$"},
        "message": {"type": "string", "minLength": 1},
        "offset": {"type": "integer", "minimum": 0},
    },
    ("error", "message"),
)
# The original protocol's envelope, for answers and errors alike: `code` is 200 or the HTTP
# status (or a word of the original's, such as its nothing-to-do code).
MINT_ENVELOPE = _obj(
    {
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": _obj(
                {"code": {"type": ["integer", "string"]}, "message": {"type": "string"}},
                ("code", "message"),
                closed=False,
            ),
        }
    },
    ("errors",),
    closed=False,
)

# Which request dataclass each request schema describes: its parser's keys must be the schema's.
REQUEST_SCHEMAS: dict[str, tuple[Schema, frozenset[str]]] = {
    "Registration": (REGISTRATION, Registration.KEYS),
    "ClaimRequest": (CLAIM, ClaimRequest.KEYS),
    "Heartbeat": (HEARTBEAT, Heartbeat.KEYS),
    "FinishReport": (FINISH, FinishReport.KEYS),
    "Unclaim": (UNCLAIM, Unclaim.KEYS),
}

COMPONENTS: dict[str, Schema] = {
    "Error": ERROR,
    "MintEnvelope": MINT_ENVELOPE,
    "ManifestEntry": MANIFEST_ENTRY,
    "File": FILE,
    "LeaseView": LEASE_VIEW,
    "Calc": CALC,
    "CalcList": CALC_LIST,
    "Registration": REGISTRATION,
    "ClaimRequest": CLAIM,
    "ClaimGrant": CLAIM_GRANT,
    "Heartbeat": HEARTBEAT,
    "HeartbeatReply": HEARTBEAT_REPLY,
    "FinishReport": FINISH,
    "Unclaim": UNCLAIM,
    "FileAck": FILE_ACK,
    "Login": LOGIN,
    "LoginGrant": LOGIN_GRANT,
    "Sites": SITES,
}
