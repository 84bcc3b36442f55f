"""HTTP transport shared by client and poller: session, retries, error mapping, file streams.

Only `requests` (and its urllib3) and the stdlib are used, so a poller host needs nothing else.
Transient failures (connection errors, 408/425/429/5xx) are retried by urllib3's `Retry` with
exponential backoff, jitter and `Retry-After`; any other 4xx fails at once with the server's
`message`. The bearer token never appears in a repr, a log line or an exception.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from webapi import errors
from webapi.contract.calc import FileAck, LoginGrant
from webapi.errors import ApiError, ChecksumMismatch, OffsetMismatch, TransportError
from webapi.fs import atomic_file

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK = 1 << 20

_ERRORS_BY_CODE: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (
        errors.BadRequest,
        errors.Unauthorized,
        errors.Forbidden,
        errors.NotFound,
        errors.Conflict,
        errors.TooLarge,
        errors.ChecksumMismatch,
        errors.InsufficientStorage,
        errors.Damaged,
    )
}


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Where the server is and how patiently to talk to it."""

    url: str
    token: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    verify: bool = True
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff_factor: float = 1.0
    backoff_max: float = 30.0
    backoff_jitter: float = 1.0


class BearerAuth(requests.auth.AuthBase):
    """Adds `Authorization: Bearer …`; its repr hides the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"


def make_retry(settings: TransportSettings) -> Retry:
    """The urllib3 retry policy: every route of the API is safe to repeat, so all methods retry."""
    return Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=0,
        allowed_methods=None,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=settings.backoff_factor,
        backoff_max=settings.backoff_max,
        backoff_jitter=settings.backoff_jitter,
        respect_retry_after_header=True,
        retry_after_max=int(max(settings.backoff_max, 1) * 4),
        # After the last retry hand back the response so the caller reports the server's message.
        raise_on_status=False,
        raise_on_redirect=True,
        redirect=0,
    )


def make_session(settings: TransportSettings) -> requests.Session:
    """A `requests.Session` with bearer auth, TLS verification and the retry policy mounted."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=make_retry(settings), pool_connections=2, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if settings.token:
        session.auth = BearerAuth(settings.token)
    if not settings.verify:
        session.verify = False
    elif settings.ca_file is not None:
        session.verify = str(settings.ca_file)
    # Proxies from the environment would silently reroute a 127.0.0.1 test server; the API URL
    # is always given explicitly, so environment settings are not consulted.
    session.trust_env = False
    session.headers["User-Agent"] = "mint-extcomp/0.1"
    return session


def error_from_response(resp: requests.Response) -> ApiError:
    """Turn an error response into the ApiError subclass named by its stable `error` code."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else resp.reason
        return ApiError(
            f"HTTP {resp.status_code}: {text}", code="internal", status=resp.status_code
        )
    code = str(body.get("error") or "internal")
    message = str(body.get("message") or f"HTTP {resp.status_code}")
    if code == "offset_mismatch":
        return OffsetMismatch(message, offset=int(body.get("offset") or 0))
    cls = _ERRORS_BY_CODE.get(code)
    if cls is not None:
        return cls(message, status=resp.status_code)
    return ApiError(message, code=code, status=resp.status_code)


def quote_name(name: str) -> str:
    """Percent-encode a file name as one URL path segment (its `/` too)."""
    return quote(name, safe="")


class Transport:
    """One API endpoint: JSON calls and streamed file transfers over a retrying session."""

    def __init__(self, settings: TransportSettings) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.session = make_session(settings)

    def close(self) -> None:
        self.session.close()

    def _timeout(self, read: float | None) -> tuple[float, float]:
        return (
            self.settings.connect_timeout,
            read if read is not None else self.settings.read_timeout,
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return send(self.session, method, self.base + path, self.base, **kwargs)

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        read_timeout: float | None = None,
        auth: bool = True,
    ) -> tuple[int, Any]:
        """Send one JSON request; return (status, body or None); raise ApiError on 4xx/5xx."""
        kwargs: dict[str, Any] = {
            "json": json,
            "params": params,
            "timeout": self._timeout(read_timeout),
        }
        if not auth:
            kwargs["auth"] = _NoAuth()
        resp = self._send(method, path, **kwargs)
        with resp:
            if resp.status_code >= 400:
                raise error_from_response(resp)
            if resp.status_code == 204 or not resp.content:
                return resp.status_code, None
            try:
                return resp.status_code, resp.json()
            except ValueError:
                raise TransportError(f"{method} {path}: the server answered non-JSON") from None

    def upload(
        self, path: str, src: Path, *, offset: int = 0, params: Mapping[str, str] | None = None
    ) -> FileAck:
        """Stream `src` from `offset` with PUT …?offset=N; on offset_mismatch resume where the
        server stands. Returns the server's acknowledgement."""
        size = src.stat().st_size
        # A few resyncs only: each one means the server told us its real offset.
        for _ in range(4):
            if offset > size:
                offset = 0
            try:
                with src.open("rb") as fh:
                    fh.seek(offset)
                    # A file object lets requests send Content-Length and lets urllib3 rewind the
                    # body before a retry; an empty body is sent as b"" (not chunked).
                    body: Any = fh if offset < size else b""
                    resp = self._send(
                        "PUT",
                        path,
                        params={**(params or {}), "offset": offset},
                        data=body,
                        headers={"Content-Type": "application/octet-stream"},
                        timeout=self._timeout(max(self.settings.read_timeout, 120.0)),
                    )
                with resp:
                    if resp.status_code >= 400:
                        raise error_from_response(resp)
                    try:
                        return FileAck.from_json(resp.json())
                    except ValueError:
                        raise TransportError(f"PUT {path}: the server answered non-JSON") from None
            except OffsetMismatch as exc:
                log.info("upload %s: server holds %d bytes, resuming there", path, exc.offset)
                if exc.offset >= size:
                    # The server already holds every byte (an earlier attempt got through).
                    return FileAck(src.name, exc.offset, True)
                offset = exc.offset
        raise TransportError(f"upload of {src.name}: the server's offset kept moving; try again")

    def download(self, path: str, dest: Path, *, size: int | None, sha256: str | None) -> Path:
        """Stream a file into a temp file beside `dest`, verify size/sha256, fsync, rename."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(dest) as fh:
            digest = self._stream_into(path, fh)
            written = fh.tell()
            if size is not None and written != size:
                raise ChecksumMismatch(f"{dest.name}: got {written} bytes, expected {size}")
            if sha256 is not None and digest != sha256:
                raise ChecksumMismatch(f"{dest.name}: sha256 {digest} differs from {sha256}")
        return dest

    def _stream_into(self, path: str, fh: Any) -> str:
        digest = hashlib.sha256()
        written = 0
        breaks = 0
        while True:
            headers = {"Range": f"bytes={written}-"} if written else {}
            resp = self._send(
                "GET", path, stream=True, headers=headers, timeout=self._timeout(None)
            )
            with resp:
                if resp.status_code >= 400:
                    raise error_from_response(resp)
                if written and resp.status_code != 206:
                    # The server ignored Range: start over from byte 0.
                    fh.seek(0)
                    fh.truncate()
                    digest, written = hashlib.sha256(), 0
                try:
                    for block in resp.iter_content(CHUNK):
                        fh.write(block)
                        digest.update(block)
                        written += len(block)
                    return digest.hexdigest()
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                    # urllib3 retries requests, not a body that breaks half-way: continue the
                    # stream from the bytes we have, a bounded number of times.
                    breaks += 1
                    if breaks > self.settings.retries:
                        raise TransportError(
                            f"download {path} kept breaking: {short_reason(exc)}"
                        ) from None
                    log.info("download %s broke at %d bytes; resuming", path, written)


class _NoAuth(requests.auth.AuthBase):
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers.pop("Authorization", None)
        return r


def send(
    session: requests.Session, method: str, url: str, label: str, **kwargs: Any
) -> requests.Response:
    """One request; requests' exceptions become a TransportError with a one-line reason."""
    try:
        return session.request(method, url, **kwargs)
    except requests.exceptions.SSLError as exc:
        raise TransportError(f"TLS failure talking to {label}: {short_reason(exc)}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransportError(f"cannot reach {label}: {short_reason(exc)}") from None
    except requests.RequestException as exc:
        raise TransportError(f"request to {label} failed: {short_reason(exc)}") from None


def short_reason(exc: BaseException) -> str:
    """A one-line reason from a requests/urllib3 exception, innermost cause first."""
    inner: BaseException = exc
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    reason = getattr(inner, "reason", None)
    if isinstance(reason, BaseException):
        inner = reason
    text = str(inner) or type(inner).__name__
    return text.splitlines()[0][:300]


def login(transport: Transport, user: str, password: str) -> LoginGrant:
    """Exchange an ID and password for a token (the client's and the poller's `login`)."""
    _, body = transport.call(
        "POST", "/api/v1/login", json={"user": user, "password": password}, auth=False
    )
    return LoginGrant.from_json(body)
