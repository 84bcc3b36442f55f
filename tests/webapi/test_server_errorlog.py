"""Peers that drop their TLS connection midway (in the handshake, in the request headers, or cut
by the watchdog) leave no traceback in the server's error log; real errors still do.

cheroot logged each such drop as "socket.error 8" or "Unhandled error … SSLEOFError" with a
traceback: reading from, then writing its 408/500 to, a TLS socket whose peer had gone.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from tests.webapi.conftest import RunningServer
from webapi.server.serve import peer_gone

pytestmark = pytest.mark.drill
NOISE = ("SSLEOFError", "socket.error", "Unhandled error", "Traceback", "peer dropped the TLS")


def _address(server: RunningServer) -> tuple[str, int]:
    url = urlsplit(server.url)
    assert url.hostname and url.port
    return url.hostname, url.port


def _half_a_client_hello(server: RunningServer) -> None:
    """The first bytes of a TLS ClientHello, then the TCP connection is closed."""
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    with socket.create_connection(_address(server), timeout=10) as raw:
        raw.sendall(hello[: len(hello) // 2])


def _headers_then_gone(server: RunningServer, linger: float) -> None:
    """A full handshake, part of a request line, then the TCP connection closed without a TLS
    close_notify (after `linger` seconds: long enough for the watchdog to cut it first)."""
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    raw = socket.create_connection(_address(server), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /healthz HT")
        time.sleep(linger)
        tls.shutdown(socket.SHUT_RDWR)  # the TCP connection only: no TLS close_notify


@pytest.fixture
def server(make_api_server: Callable[..., RunningServer]) -> RunningServer:
    return make_api_server(request_deadline_seconds=1, threads=4)


def test_dropped_peers_leave_no_traceback(
    server: RunningServer, capfd: pytest.CaptureFixture[str]
) -> None:
    _half_a_client_hello(server)
    _headers_then_gone(server, 0)
    _headers_then_gone(server, 2.5)  # the watchdog cuts it at 1 s (its tick: 0.5 s)
    time.sleep(1)  # the worker threads finish with the last connection
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    with (
        socket.create_connection(_address(server), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):  # still serving
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 200")
    err = capfd.readouterr().err
    assert not [n for n in NOISE if n in err], err[-3000:]
    assert "cut a connection: request headers took too long" in server.log_path.read_text()


def test_only_a_dropped_peer_is_left_out() -> None:
    assert peer_gone(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert peer_gone(BrokenPipeError()) and peer_gone(ConnectionResetError())
    wrapped = RuntimeError("fatal alert")
    wrapped.__cause__ = ssl.SSLEOFError(8, "EOF")
    assert peer_gone(wrapped)  # cheroot's FatalSSLAlert from a dropped handshake
    assert not peer_gone(None)
    assert not peer_gone(ssl.SSLError(1, "certificate verify failed"))
    assert not peer_gone(OverflowError("Python int too large to convert to C ssize_t"))
    assert not peer_gone(OSError(28, "No space left on device"))
