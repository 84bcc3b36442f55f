"""Client side of the original MInt protocol (`/mi-distcomp-api/`): calls, envelope, file streams.

Used by our mint-mode poller and `extcomp-api wf` against the original server or ours. Only
`requests` and the stdlib (plus the pure codec of `webapi.mint.codec`) are imported, so a poller
host needs nothing else. Files travel as base64 inside
JSON: answers are parsed as they arrive and their file strings decoded straight to disk
(`get_stream`), and request bodies are produced from files while they are sent (`StreamBody`), so
memory stays a few MiB whatever the file sizes. The bearer token never appears in a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import requests
from urllib3.util.retry import Retry

from webapi.errors import TransportError
from webapi.mint.codec.bodies import StreamBody, js
from webapi.mint.codec.jsonstream import JsonError, SinkFor, StreamParser
from webapi.mint.codec.wire import PREFIX
from webapi.transport import RETRY_STATUSES, TransportSettings, make_session, send, short_reason
from webapi.transport.session import Deadline, allowance, deadline

log = logging.getLogger(__name__)


class MintError(Exception):
    """A failure answer: HTTP status, the envelope's `code` (int or str) and `message`."""

    def __init__(self, message: str, *, status: int = 0, code: Any = None, error: str = ""):
        super().__init__(message)
        self.message, self.status, self.code, self.error = message, status, code, error

    @property
    def refused(self) -> bool:
        """The token was not accepted (the original's gateway answered 403, ours 401/403)."""
        return self.status in (401, 403)


def first(doc: Any, what: str) -> dict[str, Any]:
    """`errors[0]` of an envelope; MintError if the answer is not one."""
    errs = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errs, list) or not errs or not isinstance(errs[0], dict):
        raise MintError(f"{what}: the server's answer has no errors[0] envelope")
    return errs[0]


def _failure(resp: requests.Response, what: str, doc: Any = None) -> MintError:
    if doc is None:
        try:
            doc = resp.json()
        except ValueError:
            doc = None
    try:
        head = first(doc, what)
    except MintError:
        text = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else resp.reason
        return MintError(f"{what}: HTTP {resp.status_code}: {text}", status=resp.status_code)
    message = str(head.get("message") or f"HTTP {resp.status_code}")
    return MintError(
        f"{what}: {message}",
        status=resp.status_code,
        code=head.get("code"),
        error=str(head.get("error") or ""),
    )


# -- the session -----------------------------------------------------------------------------
def mint_settings(url: str, token: str, **more: Any) -> TransportSettings:
    """Settings for the original protocol's server (`url` already carries the port): its calls
    may take longer than ours (a whole file is one JSON answer), and fewer quick retries."""
    return TransportSettings(url=url, token=token, **{"read_timeout": 120.0, "retries": 2, **more})


class MintApi:
    """The routes under `<url>/mi-distcomp-api/`, as the original clients call them."""

    def __init__(self, settings: TransportSettings) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/") + PREFIX
        # Connection errors are retried for every call (nothing was sent); 5xx only for GETs:
        # the original protocol has no idempotency key, so a POST is never sent twice.
        retry = Retry(
            total=settings.retries,
            connect=settings.retries,
            read=0,
            status=settings.retries,
            other=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=0.5,
            backoff_max=10,
            raise_on_status=False,
            redirect=0,
        )
        self.session = make_session(settings, retry)
        self.session.headers["Content-Type"] = "application/json"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> MintApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, name: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", (self.settings.connect_timeout, self.settings.read_timeout))
        return send(self.session, method, self.base + name, self.settings.url, **kwargs)

    def call(
        self,
        method: str,
        name: str,
        *,
        params: Mapping[str, str] | None = None,
        doc: Mapping[str, Any] | None = None,
        body: StreamBody | None = None,
    ) -> dict[str, Any]:
        """One call with a small answer; returns `errors[0]` when `code` is the integer 200."""
        data: Any = body if body is not None else (js(doc) if doc is not None else None)
        size = len(data) if data is not None else 0
        with deadline(allowance(self.settings, size), name):
            resp = self._send(method, name, params=params, data=data)
        with resp:
            if resp.status_code >= 400:
                raise _failure(resp, name)
            try:
                doc_in = resp.json()
            except ValueError:
                # status 0: a garbled answer is worth a retry, like a broken connection
                raise MintError(f"{name}: the server answered non-JSON", status=0) from None
        head = first(doc_in, name)
        if head.get("code") != 200:  # "200" (a string) is a failure too, as the clients test it
            raise _failure(resp, name, doc_in)
        return head

    def get_stream(
        self,
        name: str,
        params: Mapping[str, str],
        sink_for: SinkFor,
        *,
        doc: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """GET an answer carrying files; strings `sink_for` picks go to sinks as they arrive."""
        data = js(doc) if doc is not None else None
        with deadline(allowance(self.settings), name) as dl:
            return self._parse_stream(name, dl, params, data, sink_for)

    def _parse_stream(
        self, name: str, dl: Deadline, params: Mapping[str, str], data: Any, sink_for: SinkFor
    ) -> dict[str, Any]:
        resp = self._send("GET", name, params=params, data=data, stream=True)
        with resp:
            if resp.status_code >= 400:
                raise _failure(resp, name)
            # The answer's length is known now: allow the time a slow but moving link needs.
            dl.extend(allowance(self.settings, int(resp.headers.get("Content-Length") or 0)))

            def read(n: int) -> bytes:
                try:
                    return bytes(resp.raw.read(n, decode_content=True))
                except Exception as exc:  # requests', urllib3's (ProtocolError) and OS errors alike
                    if dl.expired:
                        raise dl.error() from None
                    reason = short_reason(exc)
                    raise TransportError(f"{name}: the answer broke off: {reason}") from None

            try:
                parsed = StreamParser(read, sink_for).parse()
            except JsonError as exc:
                # Usually a connection that broke off: status 0 marks it as worth a retry.
                raise MintError(f"{name}: {exc}", status=0) from None
        if not isinstance(parsed, dict):
            raise MintError(f"{name}: the answer is not a JSON object", status=resp.status_code)
        return parsed
