"""Request/response plumbing shared by the route modules: auth, JSON bodies, errors, streaming."""

from __future__ import annotations

import functools
import json
import logging
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import bottle

from webapi.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    InsufficientStorage,
    LengthRequired,
    TooLarge,
)
from webapi.fs import disk_full

if TYPE_CHECKING:
    from webapi.calcs import Calc
    from webapi.server.auth import Principal, UserStore
    from webapi.server.config import ConfigSource
    from webapi.server.watchdog import Watchdog
    from webapi.store.base import JobStore

log = logging.getLogger("webapi.access")
MAX_JSON_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 50  # a sanity bound on any Content-Length (1 PiB)
BODY_MIN_RATE = 16 * 1024  # a body gets request_deadline_seconds plus a second per this many bytes
_POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)  # the peer shut its side down (Linux)
DRAIN_CHUNKED_BYTES = 1 << 20
# A refused body up to this size (a too-large JSON body, say) is read and dropped so that its
# client, still sending, gets the answer instead of a reset connection; a bigger one is not.
DRAIN_KNOWN_BYTES = 4 * MAX_JSON_BYTES
CHUNK = 1 << 20


@dataclass
class Deps:
    """What route handlers need, passed by closure instead of module globals."""

    store: JobStore
    config: ConfigSource
    auth: UserStore
    watchdog: Watchdog | None = None  # cuts requests whose body takes too long
    long_polls: int = 0
    long_poll_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True, slots=True)
class Stream:
    """A streamed (file) answer."""

    chunks: Iterator[bytes]
    length: int
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


def _json_answer(status: int, body: Any) -> str:
    bottle.response.status = status
    bottle.response.content_type = "application/json"
    return json.dumps(body, ensure_ascii=False)


def json_error_handler(err: bottle.HTTPError) -> str:
    """Bottle's own errors (unknown route, wrong method) as contract JSON, never HTML/trace."""
    code = {404: "not_found", 405: "bad_request", 413: "too_large"}.get(err.status_code, "internal")
    if err.status_code == 404:
        message = (
            f"no route {bottle.request.method} {bottle.request.path}; see /api/v1/openapi.json"
        )
    elif err.status_code == 405:
        message = f"method {bottle.request.method} is not allowed on {bottle.request.path}"
    else:
        message = "internal error; the server log has the details"
    bottle.response.content_type = "application/json"
    return json.dumps({"error": code, "message": message})


def route(
    app: bottle.Bottle, deps: Deps, method: str, path: str, *, public: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(principal, **url_args)`; map its result or ApiError to a JSON answer."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def handler(**kwargs: Any) -> Any:
            started = time.monotonic()
            user = "-"
            env = bottle.request.environ
            guard_body(deps, env)
            try:
                principal = None
                if not public:
                    principal = deps.auth.authenticate(header("Authorization"))
                    user = principal.user
                result = fn(principal, **kwargs)
            except OSError as exc:
                failed: ApiError
                if disk_full(exc):
                    log.error("%s %s: %s", method, printable(bottle.request.path), exc)
                    failed = out_of_space(exc)
                else:
                    log.exception(
                        "unhandled error in %s %s", method, printable(bottle.request.path)
                    )
                    failed = ApiError("internal error; see the server log")
                status, body = failed.status, failed.to_json()
                result = (status, body)
            except ApiError as exc:
                status, body = exc.status, exc.to_json()
                result = (status, body)
                if not (drain_chunked() if is_chunked() else drain_known(env)):
                    # The unread rest of the body would be taken for the next request on this
                    # keep-alive connection: end the connection with this answer.
                    bottle.response.set_header("Connection", "close")
            except Exception:
                log.exception("unhandled error in %s %s", method, printable(bottle.request.path))
                result = (
                    500,
                    {"error": "internal", "message": "internal error; see the server log"},
                )
            if isinstance(result, Stream):
                bottle.response.status = result.status
                bottle.response.content_type = "application/octet-stream"
                bottle.response.set_header("Content-Length", str(result.length))
                for key, value in result.headers:
                    bottle.response.set_header(key, value)
                status = result.status
                out: Any = result.chunks
            else:
                status, body = result if isinstance(result, tuple) else (200, result)
                out = "" if status == 204 else _json_answer(status, body)
                bottle.response.status = status
            body_done(env)
            log.info(
                "%s %s %d user=%s %.0fms",
                method,
                printable(bottle.request.path),
                status,
                user,
                (time.monotonic() - started) * 1000,
            )
            return out

        app.route(path, method=method, callback=handler)
        return fn

    return decorate


def header(name: str) -> str | None:
    """A request header as the WSGI server decoded it (latin-1). Never Bottle's get_header: it
    re-decodes as UTF-8 and raises on other bytes, a 500 before authentication."""
    value = bottle.request.environ.get("HTTP_" + name.upper().replace("-", "_"))
    return value if isinstance(value, str) else None


def printable(text: str, limit: int = 300) -> str:
    """A request-supplied string as it may go into a log line: control characters (a newline
    would forge a log line) and other unprintables escaped, the length capped."""
    out = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return out if len(out) <= limit else out[:limit] + "…"


def content_length(env: dict[str, Any], limit: int = MAX_FILE_BYTES) -> int:
    """The declared body length, refused at once if it is not a sane number (a negative one
    would make the server read until the client closes the connection)."""
    raw = env.get("CONTENT_LENGTH") or "0"
    if not re.fullmatch(r"\d{1,19}", raw.strip()):
        raise BadRequest(f"Content-Length {raw!r} is not a byte count")
    length = int(raw)
    if length > limit:
        raise TooLarge(f"a body of {length} bytes is over the limit of {limit}")
    return length


def guard_body(deps: Deps, env: dict[str, Any]) -> None:
    """Give this request's body a deadline (scaled by its length): a client that sends it too
    slowly, or never, loses the connection instead of holding a worker thread."""
    sock = env.get("extcomp.socket")
    if deps.watchdog is None or sock is None:
        return
    try:
        length = int(env.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0 and not is_chunked():
        return
    floor = float(deps.config.current.request_deadline_seconds)
    seconds = floor + max(length, 0) / BODY_MIN_RATE
    deps.watchdog.arm(
        sock, seconds, f"the body of {env.get('REQUEST_METHOD')} {env.get('PATH_INFO')}"
    )
    env["extcomp.watchdog"] = deps.watchdog


def body_done(env: dict[str, Any]) -> None:
    """The body has been read: the rest of the request (a long-poll, say) has no deadline."""
    watchdog = env.pop("extcomp.watchdog", None)
    if watchdog is not None:
        watchdog.disarm(env.get("extcomp.socket"))


def read_json(required: bool = True) -> dict[str, Any]:
    """Read a JSON object body ourselves (bounded in size, depth and time), never via Bottle's
    buffering."""
    env = bottle.request.environ
    length = content_length(env, MAX_JSON_BYTES)
    try:
        raw = env["wsgi.input"].read(length) if length else b""
    finally:
        body_done(env)
    if len(raw) < length:
        raise BadRequest(f"the JSON body ended after {len(raw)} of {length} bytes")
    if not raw:
        if required:
            raise BadRequest("expected a JSON object body")
        return {}
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise BadRequest("malformed JSON body: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the JSON body must be an object")
    return doc


def out_of_space(exc: OSError) -> InsufficientStorage:
    """The one answer for a full disk anywhere in a request (507: try again later)."""
    return InsufficientStorage(
        f"the server is out of disk space ({exc.strerror}); nothing was lost, try again later"
    )


def peer_alive(environ: dict[str, Any]) -> Callable[[], bool]:
    """Whether the client of this request still waits for the answer.

    A client waiting for an answer sends nothing more, so any event on its socket — end of
    stream, hang-up, error, or unexpected data — means it has gone (or is about to).
    """
    sock = environ.get("extcomp.socket")
    if sock is None:  # not served by our cheroot gateway (tests calling the app directly)
        return lambda: True

    def alive() -> bool:
        try:
            fd = sock.fileno()
        except OSError:
            return False
        if fd < 0:
            return False
        watch = select.poll()
        watch.register(fd, select.POLLIN | select.POLLPRI | _POLLRDHUP)
        return not watch.poll(0)

    return alive


def is_chunked() -> bool:
    return "chunked" in bottle.request.environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def drain_chunked(limit: int = DRAIN_CHUNKED_BYTES) -> bool:
    """Read and drop a refused chunked body of up to `limit` bytes, so the client, still sending
    it, gets the answer rather than a reset connection; False if some is left unread.

    Safe against a huge chunk: cheroot checks each chunk's declared size against `maxlen`
    before it reads the chunk, so nothing over the limit is ever buffered.
    """
    body = bottle.request.environ.get("wsgi.input")
    if body is None or not hasattr(body, "maxlen"):
        return False
    body.maxlen = getattr(body, "bytes_read", 0) + limit
    try:
        while body.read(64 * 1024):
            pass
    except (OSError, ValueError):  # over the limit, a broken coding or the client went away
        return False
    return True


def drain_known(env: dict[str, Any], limit: int = DRAIN_KNOWN_BYTES) -> bool:
    """Read and drop the unread rest of a refused Content-Length body of up to `limit` bytes;
    False if more is left (the connection must then close). A client that sends less than it
    declared is cut off by the body's deadline (guard_body), so this cannot hang."""
    body = env.get("wsgi.input")
    left = getattr(body, "remaining", None)
    if body is None or not isinstance(left, int) or left <= 0:
        return True  # nothing unread (or not cheroot's reader: tests calling the app directly)
    if left > limit:
        return False
    try:
        while body.read(64 * 1024):
            pass
    except (OSError, ValueError):  # the client went away or broke the body
        return False
    return True


def body_stream() -> tuple[BinaryIO, int]:
    """The raw request body and its declared length.

    A chunked body is refused: cheroot reads each chunk whole into memory, whatever its size, so
    one huge chunk could exhaust the server. A Content-Length body is streamed to disk in pieces.
    """
    env = bottle.request.environ
    if "chunked" in env.get("HTTP_TRANSFER_ENCODING", "").lower():
        raise LengthRequired(
            "send file bodies with a Content-Length, not chunked: the server "
            "streams them to disk, and resumes with ?offset=N"
        )
    return env["wsgi.input"], content_length(env)


def query_int(name: str, default: int | None = None) -> int:
    raw = bottle.request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(f"query parameter '{name}' is required")
        return default
    if not re.fullmatch(r"\d{1,18}", raw):
        raise BadRequest(f"query parameter '{name}' must be a whole number ≥ 0, got {raw!r}")
    return int(raw)


def send_file(fh: BinaryIO, size: int) -> Stream:
    """Stream a file, honouring `Range: bytes=N-` (and `N-M`)."""
    start, end = 0, size - 1
    wanted = header("Range")
    status = 200
    headers: list[tuple[str, str]] = [("Accept-Ranges", "bytes")]
    if wanted:
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
        if not m:
            fh.close()
            raise BadRequest(f"unsupported Range {wanted!r}: use 'bytes=N-'")
        start = int(m.group(1))
        if m.group(2):
            end = min(int(m.group(2)), size - 1)
        if start >= size and not (start == 0 and size == 0):
            fh.close()
            raise ApiError(
                f"range starts at {start} but the file has {size} bytes",
                code="bad_request",
                status=416,
            )
        status = 206
        headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    length = max(0, end - start + 1)

    def chunks() -> Iterator[bytes]:
        try:
            fh.seek(start)
            left = length
            while left > 0:
                block = fh.read(min(CHUNK, left))
                if not block:
                    # Shorter than recorded (it shrank after it was opened): end the connection
                    # rather than leave the reader waiting for bytes that will not come.
                    raise OSError(f"stored file ended {left} bytes early")
                left -= len(block)
                yield block
        finally:
            fh.close()

    return Stream(chunks(), length, status, tuple(headers))


def require_owner(principal: Principal, calc: Calc, *, admin_ok: bool = True) -> None:
    if calc.user == principal.user or (admin_ok and principal.admin):
        return
    raise Forbidden(f"calc {calc.id} belongs to another user")


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("this needs an admin token")
