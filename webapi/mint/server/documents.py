"""Validate the original protocol's file-carrying documents (add-calcinfo, send-results)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webapi.errors import ApiError, BadRequest
from webapi.mint.codec import wire
from webapi.mint.codec.b64 import DecodedFile
from webapi.server.config import ServerConfig


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
    if not isinstance(value, str) or len(value) > 200:
        raise BadRequest(f"add-calcinfo: {what} must be a short string")
    return value


def parse_calc_info(doc: dict[str, Any], conf: ServerConfig) -> CalcInfo:
    info = doc.get("calc-info")
    if not isinstance(info, dict):
        raise BadRequest('add-calcinfo: the body must be {"calc-info": {...}}')
    site, command = check_site_command(conf, info.get("remote-site"), info.get("command"))
    raw_files = info.get("parameter_files") or {}
    if not isinstance(raw_files, dict):
        raise BadRequest(
            "add-calcinfo: 'parameter_files' must map names to [base64, mime, charset]"
        )
    files: dict[str, DecodedFile] = {}
    types: dict[str, list[str]] = {}
    for name, value in raw_files.items():
        bare_name(name, "parameter_files")
        if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], DecodedFile)):
            raise BadRequest(
                f"add-calcinfo: parameter file {name!r} must be [base64, mime, charset]"
            )
        files[name] = value[0]
        types[name] = [_text(value[1], f"the mime of {name!r}"), _text(value[2], "a charset")]
    raw_results = info.get("result_files") or {}
    if not isinstance(raw_results, dict | list):
        raise BadRequest("add-calcinfo: 'result_files' must map the wanted result names to {}")
    results = [bare_name(n, "result_files") for n in raw_results]
    parameters = info.get("parameters", "")
    if not isinstance(parameters, str | int | float | bool | type(None)):
        raise BadRequest("add-calcinfo: 'parameters' must be a string")
    meta = {"protocol": "mint", "parameters": parameters, "types": types, "results": results}
    return CalcInfo(site, command, files, meta)


def parse_results(doc: dict[str, Any]) -> SentResults:
    raw = doc.get("result_files")
    if not isinstance(raw, dict):
        raise BadRequest("send-results: 'result_files' must map names to {content, mimetype1, …}")
    files: dict[str, DecodedFile] = {}
    missing: dict[str, str] = {}
    for name, entry in raw.items():
        bare_name(name, "send-results")
        content = entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(content, DecodedFile):
            raise BadRequest(f'send-results: result {name!r} must be {{"content": base64, …}}')
        if entry.get("mimetype1") == "Error":
            missing[name] = str(entry.get("mimetype2") or "missing")[:500]
        else:
            files[name] = content
    return SentResults(files, missing)
