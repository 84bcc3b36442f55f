"""`extcomp-api wf`: the original workflow client's command line over the original protocol.

    extcomp-api wf BASE_URL SITE TOKEN|- COMMAND IN1:IN2 OUT1:OUT2 [PARAMS]
                   [--token-file F] [--ca-file F] [--timeout S] [--poll-interval S]

Registers the calc (add-calcinfo, inputs streamed from disk as base64), releases it
(allow-wait-calc), waits on calc-status, then writes every requested result and the two logs
(`計算標準出力.txt`, `計算標準エラー出力.txt`) into the current directory, decoded as the answer
arrives. Exit 0 when the calc completed and every requested result came back, else 1 (2 for
usage errors). Unlike the original: names are checked before anything is sent and results only
ever land under their bare name in the current dir, `--timeout` bounds the wait (the calc is then
cancelled), and the token may come from a file or the environment instead of the command line.
`:50443` is appended to BASE_URL unless it names a port, as the original did.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from webapi.errors import Exit, TransportError, UsageError
from webapi.fs import temp_path
from webapi.mint.client import MintApi, MintError, mint_settings
from webapi.mint.codec import bodies
from webapi.mint.codec.b64 import DecodedFile, Discard, FileSink
from webapi.mint.codec.bodies import FileField, FilePiece, StreamBody
from webapi.mint.codec.mime import sniff
from webapi.mint.codec.wire import JP_STDERR, JP_STDOUT, LOG_NAMES, bare_name, with_port

PATIENCE = 600.0  # seconds of lost contact tolerated while waiting, when --timeout is not given


def _say(text: str) -> None:
    sys.stderr.write(f"extcomp-api wf: {text}\n")
    sys.stderr.flush()


def _split(text: str) -> list[str]:
    return [part for part in text.split(":") if part]


def _token(args: argparse.Namespace) -> str:
    if args.token != "-":
        return str(args.token)
    path = args.token_file or os.environ.get("EXTCOMP_API_TOKEN_FILE")
    if path is None:
        token = os.environ.get("EXTCOMP_API_TOKEN", "").strip()
        if not token:
            raise UsageError(
                "TOKEN '-': give --token-file, or set EXTCOMP_API_TOKEN_FILE or EXTCOMP_API_TOKEN"
            )
        return token
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read token file {path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


def _calc_info_body(args: argparse.Namespace, outputs: list[str]) -> StreamBody:
    """`{"calc-info": {command, remote-site, parameters, parameter_files, result_files}}`."""
    files: dict[str, FileField] = {}
    for raw in _split(args.inputs):
        path = Path(raw)
        name = bare_name(path.name, "input")
        if name in files:
            raise UsageError(f"two inputs are both named {name!r}")
        if path.is_file():
            with path.open("rb") as fh:
                mime1, mime2 = sniff(fh, name)
            files[name] = FileField(name, FilePiece.of_path(path), mime1, mime2)
        else:
            # The original sent a missing input as ["", "", ""] (an empty file on the far side).
            _say(f"warning: input {raw} does not exist; it is sent as an empty file")
            files[name] = FileField(name, None, "", "")
    wanted = list(dict.fromkeys([*outputs, *LOG_NAMES]))
    pieces = bodies.calc_info(
        command=args.command,
        site=args.site,
        parameters=args.parameters,
        files=files.values(),
        wanted=wanted,
    )
    return StreamBody(pieces)


def cmd_wf(args: argparse.Namespace) -> int:
    try:
        return _wf(args)
    except UsageError as exc:
        _say(str(exc))
        return Exit.USAGE


def _wf(args: argparse.Namespace) -> int:
    try:
        outputs = [bare_name(n, "output") for n in _split(args.outputs)]
        url = with_port(args.base_url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not args.site or not args.command:
        raise UsageError("SITE and COMMAND must not be empty")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be > 0")
    try:
        body = _calc_info_body(args, outputs)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    ca = args.ca_file or os.environ.get("EXTCOMP_API_CA")
    settings = mint_settings(
        url, _token(args), ca_file=Path(ca) if ca else None, retries=max(0, args.retries)
    )
    with MintApi(settings) as api:
        try:
            head = api.call("POST", "add-calcinfo", body=body)
        except (MintError, TransportError) as exc:
            _say(f"registration failed: {_text(exc)}")
            return Exit.FAILED
        accept_id = str(head.get("accept_id") or "")
        if not accept_id:
            _say("registration failed: the answer has no accept_id")
            return Exit.FAILED
        _say(f"registered calc {accept_id} ({args.command} on {args.site})")
        try:
            return _run(api, args, accept_id, outputs)
        except (MintError, TransportError) as exc:
            _say(f"{_text(exc)}; cancelling calc {accept_id}")
        except KeyboardInterrupt:
            _say(f"interrupted; cancelling calc {accept_id}")
        with contextlib.suppress(MintError, TransportError):
            api.call("POST", "cancel-wait-calc", doc={"accept_id": accept_id})
        return Exit.FAILED


def _text(exc: Exception) -> str:
    return exc.message if isinstance(exc, MintError) else str(exc)


def _run(api: MintApi, args: argparse.Namespace, accept_id: str, outputs: list[str]) -> int:
    api.call("POST", "allow-wait-calc", doc={"accept_id": accept_id})
    status = _wait(api, args, accept_id)
    missing = _fetch_results(api, accept_id, outputs)
    for name, why in missing.items():
        _say(f"result {name} did not come back: {why}")
    if status != "completed":
        _say(f"calc {accept_id} ended abnormally; see {JP_STDERR}")
        return Exit.FAILED
    return Exit.FAILED if any(n in missing for n in outputs) else Exit.OK


def _wait(api: MintApi, args: argparse.Namespace, accept_id: str) -> str:
    """Poll calc-status until completed/abnormal; print each new progress value."""
    start = time.monotonic()
    lost_since: float | None = None
    progress = ""
    params = {"accept_id": accept_id}
    while True:
        try:
            # The messages are "status:<word>"; the original client split them at the colon.
            status = str(api.call("GET", "calc-status", params=params)["message"]).partition(":")[2]
            now = str(api.call("GET", "calc-progress", params=params)["message"]).partition(":")[2]
            lost_since = None
        except TransportError as exc:
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > (args.timeout or PATIENCE):
                raise
            _say(f"server unreachable ({exc}); still waiting")
            status, now = "none", progress
        if now != progress:
            progress = now
            _say(f"{accept_id}: {progress}")
        # The status is final at calc-end; the results are there once progress is "got return".
        if status in ("completed", "abnormal") and progress == "got return":
            return status
        if args.timeout is not None and time.monotonic() - start > args.timeout:
            raise MintError(f"no result after --timeout {args.timeout:g} s")
        time.sleep(args.poll_interval)


def _fetch_results(api: MintApi, accept_id: str, outputs: list[str]) -> dict[str, str]:
    """get-calc-result into the current dir; returns {name: why} for results that did not come."""
    wanted = set(outputs) | {JP_STDOUT, JP_STDERR}
    cwd = Path.cwd()
    parts: dict[str, Path] = {}

    def sink_for(path: tuple[str | int, ...], _objects: list[dict[str, Any]]) -> Any:
        if len(path) != 6 or path[:4] != ("errors", 0, "result-info", "result_files"):
            return None
        if path[5] != "content":
            return None
        name = str(path[4])
        if name not in wanted:
            _say(f"warning: ignored result {name!r} (not asked for)")
            return Discard()
        part = temp_path(cwd / name)
        parts[name] = part
        part.unlink(missing_ok=True)
        return FileSink(part, f"result {name!r}", sync=True)

    try:
        doc = api.get_stream(
            "get-calc-result", {"accept_id": accept_id}, sink_for, doc={"accept_id": accept_id}
        )
        errs = doc.get("errors")
        head = errs[0] if isinstance(errs, list) and errs and isinstance(errs[0], dict) else {}
        if head.get("code") != 200:
            raise MintError(f"get-calc-result: {head.get('message') or 'no result-info'}")
        files = (head.get("result-info") or {}).get("result_files") or {}
        missing: dict[str, str] = {}
        for name in sorted(wanted):
            entry = files.get(name)
            if not isinstance(entry, dict) or not isinstance(entry.get("content"), DecodedFile):
                missing[name] = "not in the answer"
            elif entry.get("mimetype1") == "Error":
                missing[name] = str(entry.get("mimetype2") or "error")
            else:
                os.replace(parts.pop(name), cwd / name)
        return missing
    finally:
        for part in parts.values():
            part.unlink(missing_ok=True)
