"""Fault drills with hostile or broken requests: each gets a 4xx within a bounded time, none a
500, and slow or lying clients cannot hold the server's workers."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import requests

from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer

pytestmark = pytest.mark.drill


@contextmanager
def tls_socket(server: RunningServer) -> Iterator[ssl.SSLSocket]:
    url = urlsplit(server.url)
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    with (
        socket.create_connection((url.hostname, url.port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname=url.hostname) as sock,
    ):
        yield sock


def exchange(server: RunningServer, raw: bytes) -> tuple[int, str, float]:
    """Send `raw` as one request; (status, whole answer, seconds until it came)."""
    started = time.monotonic()
    with tls_socket(server) as sock:
        sock.sendall(raw)
        answer = b""
        while True:
            head_end = answer.find(b"\r\n\r\n")
            if head_end >= 0:
                length = 0
                for line in answer[:head_end].decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":")[1])
                if len(answer) >= head_end + 4 + length:
                    break
            try:
                block = sock.recv(65536)
            except OSError:
                break
            if not block:
                break
            answer += block
    text = answer.decode("utf-8", "replace")
    status = int(text.split()[1]) if text.startswith("HTTP/") else 0
    return status, text, time.monotonic() - started


def head(server: RunningServer, method: str, path: str, extra: str = "") -> str:
    host = urlsplit(server.url).netloc
    auth = f"Authorization: Bearer {server.tokens['alice']}\r\n"
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{extra}"


@pytest.fixture
def server(make_api_server: Callable[..., RunningServer]) -> RunningServer:
    return make_api_server(request_deadline_seconds=2, threads=4)


def test_deeply_nested_json_is_a_400(server: RunningServer) -> None:
    body = b"[" * 100_000
    raw = head(server, "POST", "/api/v1/calcs", f"Content-Length: {len(body)}\r\n\r\n")
    status, text, _ = exchange(server, raw.encode() + body)
    assert status == 400 and "nested too deeply" in text


def test_a_non_utf8_authorization_header_is_a_401(server: RunningServer) -> None:
    host = urlsplit(server.url).netloc
    raw = f"GET /api/v1/calcs HTTP/1.1\r\nHost: {host}\r\n".encode()
    raw += b"Authorization: Bearer \xff\xfe\xc3(\r\nContent-Length: 0\r\n\r\n"
    status, text, _ = exchange(server, raw)
    assert status == 401, text


@pytest.mark.parametrize("length", ["-1", "abc", "99999999999999999999999"])
def test_a_lying_content_length_is_refused_at_once(server: RunningServer, length: str) -> None:
    host = urlsplit(server.url).netloc
    raw = f"POST /api/v1/login HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n"
    status, text, took = exchange(server, raw.encode() + b'{"user": "a"')
    # Refused with a 4xx at once: nothing waits for a body that will not come. A number beyond
    # any bound is the HTTP server's 413 (it once failed in cheroot's read, a traceback).
    if length.isdigit():
        assert status == 413, text
    else:
        assert status == 400 and "Content-Length" in text, text
    assert took < 5
    log = server.log_path.read_text()
    assert " 500 " not in log and "Traceback" not in log and "OverflowError" not in log


@pytest.mark.parametrize("what", ["headers", "body"])
def test_slow_clients_are_cut_off_and_cannot_hold_the_workers(
    server: RunningServer, what: str
) -> None:
    """Eight clients (twice the worker threads) send a byte every half second; the server cuts
    each after its deadline, and a normal request is answered meanwhile."""
    stop = threading.Event()
    cut: list[float] = []

    def slow() -> None:
        started = time.monotonic()
        try:
            with tls_socket(server) as sock:
                if what == "body":
                    text = head(server, "POST", "/api/v1/login", "Content-Length: 1000\r\n\r\n")
                    sock.sendall(text.encode())
                    drip = b"x" * 1000
                else:
                    drip = head(server, "GET", "/api/v1/calcs").encode()
                for i in range(len(drip)):
                    if stop.wait(0.5):
                        return
                    sock.sendall(drip[i : i + 1])
        except OSError:
            pass
        cut.append(time.monotonic() - started)

    threads = [threading.Thread(target=slow, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    try:
        started = time.monotonic()
        assert Api(server).call("GET", "/healthz").status_code == 200
        assert time.monotonic() - started < 15
        for thread in threads:
            thread.join(timeout=30)
        assert len(cut) == 8 and max(cut) < 20, cut
    finally:
        stop.set()


def test_request_paths_cannot_forge_log_lines(server: RunningServer) -> None:
    resp = requests.get(
        server.url + "/api/v1/calcs/%0Ainjected%20line", verify=str(server.ca_file), timeout=10
    )
    assert resp.status_code in (401, 404)
    Api(server).call("GET", "/healthz")
    lines = server.log_path.read_text().splitlines()
    assert not any(line.startswith("injected") for line in lines)


def test_numbers_out_of_range_are_400s(server: RunningServer) -> None:
    api = Api(server)
    calc = api.queued()
    body = b'{"poller": "p", "wait": NaN}'
    raw = head(server, "POST", "/api/v1/sites/site-a/claim", f"Content-Length: {len(body)}\r\n")
    status, text, _ = exchange(server, raw.encode() + b"\r\n" + body)
    assert status == 400 and "'wait'" in text
    _claimed, lease = api.claimed()
    resp = api.call(
        "POST", f"/api/v1/calcs/{calc['id']}/finish", json={"lease": lease, "exit_code": 2**70}
    )
    assert resp.status_code == 400 and "exit_code" in resp.json()["message"]
