"""Validate the original protocol's file-carrying documents (add-calcinfo, send-results)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webapi.contract.schemas import BARE_NAME
from webapi.errors import ApiError, BadRequest
from webapi.mint.codec import wire
from webapi.mint.codec.b64 import DecodedFile
from webapi.mint.codec.calls import call_schemas
from webapi.server.config import ServerConfig

# What the file maps must look like, for the messages that refuse them.
PARAMETER_SHAPE = "mapping each input's name to [base64, mime, charset] ({} for no inputs)"
WANTED_SHAPE = 'naming the wanted results ({"out.txt": {"content": "", …}, …}) or a list of names'
RESULT_SHAPE = 'mapping each result\'s name to {"content": base64, "mimetype1": …, "mimetype2": …}'
# The mime type and charset of a parameter file are short strings (_text).
MAX_TEXT = 200

Schema = dict[str, Any]
# What the decoder (codec.b64) takes: the strict alphabet in groups of 4, '=' padding only at the
# end and optional (the last group may be 2 or 3 characters); MIME line breaks are dropped.
_B64_CHAR = r"[A-Za-z0-9+/][\r\n]*"
_B64_PAD = r"=[\r\n]*"
BASE64: Schema = {
    "type": "string",
    "pattern": (
        rf"^[\r\n]*(?:(?:{_B64_CHAR}){{4}})*"
        rf"(?:(?:{_B64_CHAR}){{2}}(?:{_B64_PAD}){{0,2}}|(?:{_B64_CHAR}){{3}}(?:{_B64_PAD})?)?$"
    ),
    "contentEncoding": "base64",
    "description": 'the file\'s bytes as base64 ("" for an empty file)',
}
_SHORT: Schema = {"type": "string", "maxLength": MAX_TEXT}
_PARAMETER_FILE: Schema = {
    "type": "array",
    "prefixItems": [
        BASE64,
        {**_SHORT, "description": "mime type"},
        {**_SHORT, "description": "charset"},
    ],
    "minItems": 3,
    "maxItems": 3,
}
_WANTED: Schema = {
    "oneOf": [
        {
            "type": "object",
            "minProperties": 1,
            "propertyNames": BARE_NAME,
            "additionalProperties": {"type": "object", "description": "an empty placeholder"},
        },
        {"type": "array", "minItems": 1, "items": BARE_NAME},
    ],
    "description": WANTED_SHAPE,
}
_RESULT: Schema = {
    "type": "object",
    "required": ["content"],
    "properties": {
        "content": BASE64,
        "mimetype1": {"type": "string", "description": '"Error" marks a missing result'},
        "mimetype2": {"type": "string", "description": "charset, or why the result is missing"},
    },
}


def request_schemas() -> dict[str, Schema]:
    """The request body of every original-protocol POST as a JSON Schema: the control calls'
    from their table (codec.calls), the two file-carrying documents' from the rules below."""
    out = call_schemas()
    add = {
        "type": "object",
        "required": ["calc-info"],
        "properties": {
            "calc-info": {
                "type": "object",
                "required": ["command", "remote-site", "parameter_files", "result_files"],
                "properties": {
                    "command": {"type": "string", "minLength": 1},
                    "remote-site": {"type": "string", "minLength": 1},
                    "parameters": {"type": ["string", "number", "boolean", "null"]},
                    "parameter_files": {
                        "type": "object",
                        "propertyNames": BARE_NAME,
                        "additionalProperties": _PARAMETER_FILE,
                        "description": PARAMETER_SHAPE,
                    },
                    "result_files": _WANTED,
                },
            }
        },
    }
    out["add-calcinfo"] = add
    sent = out["send-results"]
    sent["required"].append("result_files")
    sent["properties"]["result_files"] = {
        "type": "object",
        "minProperties": 1,
        "propertyNames": BARE_NAME,
        "additionalProperties": _RESULT,
        "description": RESULT_SHAPE,
    }
    return out


@dataclass(frozen=True, slots=True)
class CalcInfo:
    site: str
    command: str
    files: dict[str, DecodedFile]
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SentResults:
    files: dict[str, DecodedFile]  # delivered
    missing: dict[str, str]  # name → the poller's message (mimetype1 "Error")


def bare_name(name: object, where: str) -> str:
    """A plain file name (the original clients write it straight into a directory)."""
    try:
        return wire.bare_name(name, where)
    except ValueError as exc:
        raise BadRequest(f"{exc}; nothing stored") from None


def check_site_command(conf: ServerConfig, site: Any, command: Any) -> tuple[str, str]:
    """The original's registration rule: the site is listed and the command is on its list."""
    if not isinstance(site, str) or not site:
        raise BadRequest("add-calcinfo: 'remote-site' must be a site id")
    if not isinstance(command, str) or not command:
        raise BadRequest("add-calcinfo: 'command' must be a command string")
    if site not in conf.sites:
        raise ApiError(
            f"add-calcinfo: unknown site {site!r}; configured sites: {sorted(conf.sites)}",
            code="unknown_site",
            status=400,
        )
    allowed = conf.sites[site].commands
    if command not in allowed:
        raise ApiError(
            f"add-calcinfo: command {command!r} is not allowed on site {site!r}; "
            f"allowed: {list(allowed)}",
            code="command_not_allowed",
            status=403,
        )
    return site, command


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BadRequest(f"add-calcinfo: {what} must be a short string; nothing stored")
    return value


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str | DecodedFile):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _files_field(doc: dict[str, Any], key: str, call: str, shape: str, *, names: bool) -> Any:
    """`doc[key]`: an object (or, with `names`, a list of names); BadRequest otherwise."""
    if key not in doc:
        raise BadRequest(
            f"{call}: {key!r} is missing: it must be an object {shape}; nothing stored"
        )
    value = doc[key]
    if not isinstance(value, dict) and not (names and isinstance(value, list)):
        raise BadRequest(
            f"{call}: {key!r} must be an object {shape}, not {_kind(value)}; nothing stored"
        )
    return value


def parse_calc_info(doc: dict[str, Any], conf: ServerConfig) -> CalcInfo:
    info = doc.get("calc-info")
    if not isinstance(info, dict):
        raise BadRequest('add-calcinfo: the body must be {"calc-info": {...}}; nothing stored')
    site, command = check_site_command(conf, info.get("remote-site"), info.get("command"))
    raw_files = _files_field(info, "parameter_files", "add-calcinfo", PARAMETER_SHAPE, names=False)
    files: dict[str, DecodedFile] = {}
    types: dict[str, list[str]] = {}
    for name, value in raw_files.items():
        bare_name(name, "parameter_files")
        if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], DecodedFile)):
            raise BadRequest(
                f"add-calcinfo: parameter file {name!r} must be [base64, mime, charset], "
                f"not {_kind(value)}; nothing stored"
            )
        files[name] = value[0]
        types[name] = [_text(value[1], f"the mime of {name!r}"), _text(value[2], "a charset")]
    raw_results = _files_field(info, "result_files", "add-calcinfo", WANTED_SHAPE, names=True)
    if not raw_results:
        raise BadRequest(
            "add-calcinfo: 'result_files' names no result files: nothing at all would come "
            "back (the original client names at least its two logs); nothing stored"
        )
    results = [bare_name(n, "result_files") for n in raw_results]
    if isinstance(raw_results, dict):
        for name, placeholder in raw_results.items():
            if not isinstance(placeholder, dict):
                raise BadRequest(
                    f"add-calcinfo: wanted result {name!r} must be an object (a placeholder "
                    f'such as {{"content": "", "mimetype1": "", "mimetype2": ""}}), '
                    f"not {_kind(placeholder)}; nothing stored"
                )
    parameters = info.get("parameters", "")
    if not isinstance(parameters, str | int | float | bool | type(None)):
        raise BadRequest("add-calcinfo: 'parameters' must be a string; nothing stored")
    meta = {"protocol": "mint", "parameters": parameters, "types": types, "results": results}
    return CalcInfo(site, command, files, meta)


def parse_results(doc: dict[str, Any]) -> SentResults:
    raw = _files_field(doc, "result_files", "send-results", RESULT_SHAPE, names=False)
    if not raw:
        raise BadRequest(
            "send-results: 'result_files' is empty: no result files at all; send each wanted "
            'result, as {"content": "", "mimetype1": "Error", "mimetype2": why} if it is '
            "missing; nothing stored"
        )
    files: dict[str, DecodedFile] = {}
    missing: dict[str, str] = {}
    for name, entry in raw.items():
        bare_name(name, "send-results")
        if not isinstance(entry, dict):
            raise BadRequest(
                f'send-results: result {name!r} must be an object {{"content": base64, '
                f'"mimetype1": …, "mimetype2": …}}, not {_kind(entry)}; nothing stored'
            )
        content = entry.get("content")
        if not isinstance(content, DecodedFile):
            raise BadRequest(
                f'send-results: result {name!r} needs a "content" string (base64; "" for an '
                "empty or missing file); nothing stored"
            )
        for key in ("mimetype1", "mimetype2"):
            if not isinstance(entry.get(key, ""), str):
                raise BadRequest(
                    f"send-results: result {name!r}: {key!r} must be a string, not "
                    f"{_kind(entry[key])}; nothing stored"
                )
        if entry.get("mimetype1") == "Error":
            missing[name] = str(entry.get("mimetype2") or "missing")[:500]
        else:
            files[name] = content
    return SentResults(files, missing)
