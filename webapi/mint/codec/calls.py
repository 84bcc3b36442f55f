"""The original protocol's small control bodies (accept_id, site_id, …): one table that both
parses them (`parse_call`) and describes them as JSON Schemas (`call_schemas`), so the OpenAPI
document cannot say other than what the server accepts; the GET calls' query parameters are
described from the same fields (`query_schemas`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from webapi.contract.calc import CALC_ID_RE
from webapi.errors import BadRequest
from webapi.mint.codec.ids import UUID_RE

Schema = dict[str, Any]


def _bare(regex: re.Pattern[str]) -> str:
    """A whole-string pattern without its anchors, to be joined with others."""
    return regex.pattern.removeprefix("^").removesuffix("$")


# What an accept_id looks like: a uuid4 (dashes optional, as the original handed out) or our own
# calc id (codec.ids); codec.ids maps either to the calc id.
ACCEPT_ID: Schema = {
    "type": "string",
    "pattern": f"^(?:{_bare(CALC_ID_RE)}|{_bare(UUID_RE)})$",
    "description": "a calc's uuid from add-calcinfo (or our own `c-…` calc id)",
}
SITE_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "description": "the poller's site (one of the server's configured sites)",
}


@dataclass(frozen=True, slots=True)
class Field:
    """One member of a control body: its JSON Schema, whether it must be there, and (for an
    enumeration) the only values taken; the parser checks exactly type, presence and values."""

    name: str
    schema: Schema
    required: bool = True
    values: tuple[str | None, ...] = ()

    def check(self, call: str, doc: dict[str, Any]) -> None:
        if self.name not in doc:
            if self.required:
                raise BadRequest(f"{call}: {self.name!r} is missing; nothing changed")
            return
        value = doc[self.name]
        if self.values:
            if value not in self.values:
                shown = " or ".join(json.dumps(v) for v in self.values)
                raise BadRequest(
                    f"{call}: {self.name!r} must be {shown}, not {value!r}; nothing changed"
                )
        elif not isinstance(value, str):
            raise BadRequest(
                f"{call}: {self.name!r} must be a string, not {type(value).__name__}; "
                "nothing changed"
            )
        elif len(value) < self.schema.get("minLength", 0):
            raise BadRequest(f"{call}: {self.name!r} is empty; nothing changed")
        elif "pattern" in self.schema and not re.fullmatch(self.schema["pattern"], value):
            raise BadRequest(
                f"{call}: {self.name!r} {value[:80]!r} is not {self.schema['description']}; "
                "nothing changed"
            )


def _enum(name: str, values: tuple[str | None, ...], required: bool, why: str) -> Field:
    return Field(name, {"enum": list(values), "description": why}, required, values)


_ACCEPT = Field("accept_id", ACCEPT_ID)
_SITE = Field("site_id", SITE_ID)
CALLS: dict[str, tuple[Field, ...]] = {
    "allow-wait-calc": (_ACCEPT,),
    "cancel-wait-calc": (
        _ACCEPT,
        _enum("delete", ("force", "", None), False, '"force" (or absent): cancel even if running'),
    ),
    "calc-params-complete": (_ACCEPT, _SITE),
    "calc-start": (_ACCEPT, _SITE),
    "calc-end": (
        _ACCEPT,
        _SITE,
        _enum("result", ("calc end", "abnormal"), True, "how the program ended"),
    ),
    "end-send": (_ACCEPT, _SITE),
    # Its result_files are a document of their own (mint.server.documents adds their schema).
    "send-results": (_ACCEPT, _SITE),
}


# The GET calls take the same ids as query parameters. A missing or malformed accept_id is
# answered 404 ("not a calc id") and a site_id that is not served 400, as the original did.
QUERIES: dict[str, tuple[Field, ...]] = {
    "calc-status": (_ACCEPT,),
    "calc-progress": (_ACCEPT,),
    "get-calc-result": (_ACCEPT,),
    "calc-request": (_SITE,),
    "calc-params": (_ACCEPT, _SITE),
}


def parse_call(call: str, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` if it is a well-formed body of `call` (other members are ignored, as the original
    did); BadRequest naming the member otherwise. Whether the accept_id names a calc is the
    route's business (404)."""
    for member in CALLS[call]:
        member.check(call, doc)
    return doc


def call_schemas() -> dict[str, Schema]:
    """Each control call's request body as a JSON Schema, from the same table `parse_call` uses."""
    return {
        call: {
            "type": "object",
            "required": [f.name for f in fields if f.required],
            "properties": {f.name: dict(f.schema) for f in fields},
        }
        for call, fields in CALLS.items()
    }


def query_schemas() -> dict[str, dict[str, Schema]]:
    """Each GET call's query parameters (name → JSON Schema), from the same fields as the bodies."""
    return {call: {f.name: dict(f.schema) for f in fields} for call, fields in QUERIES.items()}
