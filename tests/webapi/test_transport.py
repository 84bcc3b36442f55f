"""Transport against a scripted local HTTP server: retries, Retry-After, fail-fast 4xx, files."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from webapi.errors import BadRequest, ChecksumMismatch, TransportError, Unauthorized
from webapi.transport import Transport, TransportSettings, make_session

Reply = tuple[int, dict[str, str], bytes]


class Script:
    """Replies handed out in order (the last one repeats); requests are recorded."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def next(self) -> Reply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def _json(status: int, body: dict[str, Any], **headers: str) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


@pytest.fixture
def fake() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.seen.append((self.command, self.path, dict(self.headers), body))
            status, headers, payload = script.next()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _any

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script
    server.shutdown()
    server.server_close()


def transport(url: str, **over: Any) -> Transport:
    settings = dict(
        url=url,
        token="sekret-token-value",
        retries=3,
        backoff_factor=0.01,
        backoff_max=0.05,
        backoff_jitter=0.01,
    )
    settings.update(over)
    return Transport(TransportSettings(**settings))


def test_retries_5xx_and_429_honouring_retry_after(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.replies = [
        _json(503, {"error": "internal", "message": "busy"}),
        _json(429, {"error": "internal", "message": "slow down"}, **{"Retry-After": "1"}),
        _json(200, {"ok": True}),
    ]
    t = transport(url)
    started = time.monotonic()
    status, body = t.call("POST", "/api/v1/calcs", json={"site": "s"})
    assert (status, body) == (200, {"ok": True})
    assert len(script.seen) == 3  # POST retried too: every route of the API is idempotent
    assert time.monotonic() - started >= 0.9  # waited for Retry-After
    assert script.seen[0][2]["Authorization"] == "Bearer sekret-token-value"


def test_other_4xx_fail_fast_with_server_message(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.replies = [_json(400, {"error": "bad_request", "message": "file name 'x/../y' bad"})]
    with pytest.raises(BadRequest, match=r"file name 'x/\.\./y' bad"):
        transport(url).call("GET", "/api/v1/calcs")
    assert len(script.seen) == 1
    script.replies = [_json(401, {"error": "unauthorized", "message": "token expired"})]
    with pytest.raises(Unauthorized, match="token expired"):
        transport(url).call("GET", "/api/v1/calcs")


def test_gives_back_last_5xx_after_retries(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.replies = [_json(502, {"error": "internal", "message": "proxy down"})]
    with pytest.raises(Exception, match="proxy down"):
        transport(url, retries=2).call("GET", "/x")
    assert len(script.seen) == 3


def test_unreachable_is_transport_error_without_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    t = transport("http://127.0.0.1:9", retries=1)
    with pytest.raises(TransportError, match=r"cannot reach http://127\.0\.0\.1:9") as err:
        t.call("GET", "/api/v1/calcs")
    assert "sekret" not in str(err.value)
    assert "sekret" not in caplog.text
    assert "sekret" not in repr(t.settings) and "sekret" not in repr(t.session.auth)


def test_session_verify_and_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    assert make_session(TransportSettings("https://h", ca_file=ca)).verify == str(ca)
    assert make_session(TransportSettings("https://h", verify=False)).verify is False
    assert make_session(TransportSettings("https://h")).verify is True


def test_upload_resumes_at_server_offset(fake: tuple[str, Script], tmp_path: Path) -> None:
    url, script = fake
    src = tmp_path / "in.bin"
    src.write_bytes(b"0123456789")
    script.replies = [
        _json(409, {"error": "offset_mismatch", "message": "server holds 4", "offset": 4}),
        _json(200, {"name": "in.bin", "received": 10, "complete": True}),
    ]
    answer = transport(url).upload("/api/v1/calcs/c/inputs/in.bin", src)
    assert answer.complete is True
    (_, p1, _, b1), (_, p2, h2, b2) = script.seen
    assert p1.endswith("offset=0") and b1 == b"0123456789"
    assert p2.endswith("offset=4") and b2 == b"456789" and h2["Content-Length"] == "6"


def test_download_verifies_and_replaces_atomically(
    fake: tuple[str, Script], tmp_path: Path
) -> None:
    url, script = fake
    data = b"result bytes\n" * 1000
    script.replies = [(200, {"Content-Type": "application/octet-stream"}, data)]
    dest = tmp_path / "out" / "r.txt"
    t = transport(url)
    t.download("/r", dest, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data
    dest.write_text("old")
    with pytest.raises(ChecksumMismatch, match="sha256"):
        t.download("/r", dest, size=len(data), sha256="0" * 64)
    assert dest.read_text() == "old"  # a bad download never replaces the file
    assert [p.name for p in dest.parent.iterdir()] == ["r.txt"]  # no temp file left
