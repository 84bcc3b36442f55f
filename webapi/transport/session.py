"""The HTTP session every client of our servers uses: retries, TLS, bearer auth, error mapping,
and a deadline on each request as a whole, so a server that answers one byte at a time cannot
hold a caller for ever (a per-read timeout alone would never fire)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from webapi import errors
from webapi.errors import ApiError, OffsetMismatch, TransportError

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "mint-extcomp/0.2"

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
    # The deadline of one request as a whole: `deadline_floor` seconds plus one second per
    # `min_rate` bytes it carries (a slow but moving transfer is never cut short).
    deadline_floor: float = 120.0
    min_rate: float = 16 * 1024


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


def make_session(settings: TransportSettings, retry: Retry | None = None) -> requests.Session:
    """A `requests.Session` with bearer auth, TLS verification and the retry policy mounted."""
    session = requests.Session()
    adapter = _WatchedAdapter(
        max_retries=retry or make_retry(settings), pool_connections=2, pool_maxsize=4
    )
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
    session.headers["User-Agent"] = USER_AGENT
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


class NoAuth(requests.auth.AuthBase):
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


# -- deadlines ---------------------------------------------------------------------------------
class _Watch:
    """The socket of one request in flight, and whether its deadline has passed."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.expired = False

    def cut(self) -> None:
        self.expired = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the blocked read or write returns at once


_local = threading.local()


def _note(conn: HTTPConnection) -> None:
    watch: _Watch | None = getattr(_local, "watch", None)
    if watch is None:
        return
    if watch.expired:  # no further attempt (urllib3 retries) once the deadline has passed
        raise TransportError("the request's deadline has passed")
    watch.sock = conn.sock


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _note(self)

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _note(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _note(self)

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _note(self)
        return super().getresponse(*args, **kwargs)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    """An adapter whose connections tell the current deadline which socket to cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class Deadline:
    """Cuts this thread's request (connection, sending, headers, body) once `seconds` passed."""

    def __init__(self, seconds: float, what: str) -> None:
        self.what = what
        self.started = time.monotonic()
        self.seconds = seconds
        self.watch = _Watch()
        self._timer: threading.Timer | None = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        left = max(0.0, self.started + self.seconds - time.monotonic())
        self._timer = threading.Timer(left, self.watch.cut)
        self._timer.daemon = True
        self._timer.start()

    def extend(self, seconds: float) -> None:
        """Allow `seconds` in all from the start (e.g. once the answer's length is known)."""
        if seconds > self.seconds and not self.watch.expired:
            self.seconds = seconds
            self._arm()

    @property
    def expired(self) -> bool:
        return self.watch.expired

    def error(self) -> TransportError:
        return TransportError(
            f"{self.what}: no complete answer within {self.seconds:.0f} s (the server sends or "
            "takes data too slowly); gave up on this request"
        )

    def __enter__(self) -> Deadline:
        _local.watch = self.watch
        self._arm()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        _local.watch = None


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[Deadline]:
    """`with deadline(...)`: any failure after the deadline passed is reported as that."""
    with Deadline(seconds, what) as dl:
        try:
            yield dl
        except (TransportError, OSError, requests.RequestException, ValueError):
            if dl.expired:
                raise dl.error() from None
            raise


def allowance(settings: TransportSettings, size: int = 0, wait: float = 0.0) -> float:
    """Seconds one request may take: the floor, time to move `size` bytes, server-side waiting."""
    return settings.deadline_floor + wait + size / settings.min_rate
