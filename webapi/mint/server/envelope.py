"""The original protocol's answer envelope, its route wrapper (auth, errors, logging) and bodies."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import bottle

from webapi.errors import ApiError, BadRequest, ConfigError, Unauthorized
from webapi.fs import disk_full
from webapi.mint.codec.wire import PREFIX
from webapi.server.auth import Principal
from webapi.server.routing import (
    Deps,
    Stream,
    body_done,
    body_stream,
    drain_chunked,
    guard_body,
    header,
    is_chunked,
    out_of_space,
)

# An error answer is only seen by a client that has sent its whole body: read the rest of a
# rejected upload (up to the seed's 2 GiB of base64 plus slack) instead of resetting it.
DRAIN_MAX = 3 << 30
GET_BODY_MAX = 1 << 20
JSON_TYPE = "application/json"
log = logging.getLogger("webapi.access")

Handler = Callable[[Principal, "Body"], Any]


class Body:
    """The request body, read at most to its declared length (chunked bodies are refused)."""

    def __init__(self) -> None:
        self._fh: BinaryIO
        self._fh, self.length = body_stream()
        self.remaining = self.length
        self.ended = self.length == 0

    def read(self, n: int) -> bytes:
        if self.ended:
            return b""
        n = min(n, self.remaining)
        try:
            block = self._fh.read(n)
        except (OSError, ValueError):
            block = b""
        self.remaining -= len(block)
        if not block or self.remaining == 0:
            self.ended = True
        return block

    def json(self) -> dict[str, Any]:
        """A small JSON object body (the poller's and workflow's control calls)."""
        if self.length > GET_BODY_MAX:
            raise BadRequest(f"this call takes a small JSON object, not {self.length} bytes")
        raw = b""
        while len(raw) <= GET_BODY_MAX and (block := self.read(GET_BODY_MAX)):
            raw += block
        try:
            doc = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON body: {exc}") from None
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        return doc

    def drain(self, limit: int) -> bool:
        """Read and drop what is left (up to `limit` bytes); False if some is left unread."""
        left = limit
        while not self.ended and left > 0:
            left -= len(self.read(min(1 << 20, left)))
        return self.ended


def require_json(content_type: str | None) -> None:
    """Refuse (415) a POST body not sent as JSON, as the original's JSON reader (Flask) did.
    GETs are not checked: a GET body is ignored whatever its type."""
    media = (content_type or "").partition(";")[0].strip().lower()
    if media != JSON_TYPE:
        sent = f"{content_type!r}" if content_type else "no Content-Type"
        raise ApiError(
            f"the body must be JSON sent as 'Content-Type: {JSON_TYPE}', not {sent}; "
            "nothing changed",
            code="unsupported_media_type",
            status=415,
        )


def ok(message: str, **extra: Any) -> dict[str, Any]:
    return {"errors": [{"code": 200, "message": message, **extra}]}


def failure(code: int | str, message: str, **extra: Any) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, **extra}]}


def _answer(status: int, doc: dict[str, Any]) -> bytes:
    bottle.response.status = status
    bottle.response.content_type = "application/json; charset=utf-8"
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def mint_route(
    app: bottle.Bottle, deps: Deps, method: str, name: str, *, status_word: bool = False
) -> Callable[[Handler], Handler]:
    """Register `fn(principal, body)` at PREFIX+name. Errors become the envelope with `code` =
    HTTP status; `status_word` puts 'status:<word>: ' in front (the client splits at ':')."""

    def decorate(fn: Handler) -> Handler:
        @functools.wraps(fn)
        def handler() -> Any:
            started, user = time.monotonic(), "-"
            body: Body | None = None
            env = bottle.request.environ
            guard_body(deps, env)
            try:
                try:
                    body = Body()  # refuses a chunked body (411) inside the envelope
                    principal = deps.auth.authenticate(header("Authorization"))
                except Unauthorized as exc:
                    # The original sat behind a gateway that answered 403 for a bad token.
                    raise ApiError(
                        f"access refused: {exc.message}", code="forbidden", status=403
                    ) from None
                user = principal.user
                if method == "POST":
                    require_json(bottle.request.get_header("Content-Type"))
                result = fn(principal, body)
                status = 200
            except OSError as exc:
                if disk_full(exc):
                    log.error("%s: %s", name, exc)
                    status, full = 507, out_of_space(exc)
                    result = failure(status, f"{name}: {full.message}", error=full.code)
                else:
                    log.exception("unhandled error in %s %s", method, name)
                    status = 500
                    result = failure(500, "internal error: see the server log")
            except ApiError as exc:
                status, message = exc.status, exc.message
                if status_word and not message.startswith("status:"):
                    message = f"status:error: {message}"
                elif not status_word and not message.startswith(f"{name}:"):
                    message = f"{name}: {message}"  # says which call, and has a colon
                result = failure(status, message, error=exc.code)
            except ConfigError as exc:
                log.error("%s: %s", name, exc)
                status = 500
                result = failure(500, "internal error: the server configuration is broken")
            except Exception:
                log.exception("unhandled error in %s %s", method, name)
                status = 500
                result = failure(500, "internal error: see the server log")
            if body is None:
                drained = is_chunked() and drain_chunked()
            else:
                drained = body.drain(GET_BODY_MAX if method == "GET" else DRAIN_MAX)
            if not drained:
                bottle.response.set_header("Connection", "close")
            body_done(env)
            log.info(
                "%s %s%s %d user=%s %.0fms",
                method,
                PREFIX,
                name,
                status,
                user,
                (time.monotonic() - started) * 1000,
            )
            if isinstance(result, Stream):
                bottle.response.status = 200
                for key, value in result.headers:
                    bottle.response.set_header(key, value)
                bottle.response.set_header("Content-Length", str(result.length))
                return result.chunks
            return _answer(status, result)

        app.route(PREFIX + name, method=method, callback=handler)
        return fn

    return decorate
