"""HTTP transport shared by client and poller: JSON calls and file streams over one session.

Only `requests` (and its urllib3) and the stdlib are used, so a poller host needs nothing else.
Every request has a deadline as a whole (webapi.transport.session), scaled by what it carries.
Transient failures (connection errors, 408/425/429/5xx) are retried by urllib3's `Retry` with
exponential backoff, jitter and `Retry-After`; any other 4xx fails at once with the server's
`message`. The bearer token never appears in a repr, a log line or an exception.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from webapi.contract.calc import FileAck, LoginGrant
from webapi.errors import ChecksumMismatch, OffsetMismatch, TransportError
from webapi.fs import atomic_file
from webapi.transport.session import (
    RETRY_STATUSES,
    BearerAuth,
    NoAuth,
    TransportSettings,
    allowance,
    deadline,
    error_from_response,
    make_retry,
    make_session,
    send,
    short_reason,
)

__all__ = [
    "RETRY_STATUSES",
    "BearerAuth",
    "Transport",
    "TransportSettings",
    "login",
    "make_retry",
    "make_session",
    "quote_name",
    "send",
    "short_reason",
]

log = logging.getLogger(__name__)
CHUNK = 1 << 20


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
        server_wait: float = 0.0,
        auth: bool = True,
    ) -> tuple[int, Any]:
        """Send one JSON request; return (status, body or None); raise ApiError on 4xx/5xx.

        `server_wait`: how long the server may legitimately hold the answer (a long-poll)."""
        kwargs: dict[str, Any] = {
            "json": json,
            "params": params,
            "timeout": self._timeout(read_timeout),
        }
        if not auth:
            kwargs["auth"] = NoAuth()
        with deadline(allowance(self.settings, wait=server_wait), f"{method} {path}"):
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
                with (
                    src.open("rb") as fh,
                    deadline(allowance(self.settings, size - offset), f"upload of {src.name}"),
                ):
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
        with deadline(allowance(self.settings), f"download of {path}") as dl:
            return self._stream_within(path, fh, dl)

    def _stream_within(self, path: str, fh: Any, dl: Any) -> str:
        digest = hashlib.sha256()
        written = 0
        breaks = 0
        while True:
            headers = {"Range": f"bytes={written}-"} if written else {}
            resp = self._send(
                "GET", path, stream=True, headers=headers, timeout=self._timeout(None)
            )
            # The answer's length is known now: allow the time a slow but moving link needs.
            length = int(resp.headers.get("Content-Length") or 0)
            dl.extend(allowance(self.settings, written + length))
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
                    if dl.expired:
                        raise dl.error() from None
                    # urllib3 retries requests, not a body that breaks half-way: continue the
                    # stream from the bytes we have, a bounded number of times.
                    breaks += 1
                    if breaks > self.settings.retries:
                        raise TransportError(
                            f"download {path} kept breaking: {short_reason(exc)}"
                        ) from None
                    log.info("download %s broke at %d bytes; resuming", path, written)


def login(transport: Transport, user: str, password: str) -> LoginGrant:
    """Exchange an ID and password for a token (the client's and the poller's `login`)."""
    _, body = transport.call(
        "POST", "/api/v1/login", json={"user": user, "password": password}, auth=False
    )
    return LoginGrant.from_json(body)
