"""Fault drills for the API server's store: a second server on one data dir, an admin command
beside a live upload, a damaged stored file, and a disk that really fills up."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.fixtures.tmpfs import fill, small_tmpfs
from tests.webapi.apihelp import Api, sha
from tests.webapi.conftest import RunningServer
from webapi.cli import main as api_main

pytestmark = pytest.mark.drill
MIB = 1 << 20


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_second_server_on_one_data_dir_refuses_to_start(
    make_api_server: Callable[..., RunningServer],
) -> None:
    server = make_api_server(subprocess=True)
    assert server.process is not None
    second = subprocess.run(
        [sys.executable, "-m", "webapi.cli", "serve", "--config", str(server.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2, second.stderr
    assert f"pid {server.process.pid}" in second.stderr
    assert "one API server per data_dir" in second.stderr and "Traceback" not in second.stderr
    assert server.process.poll() is None  # the first one serves on


def test_an_admin_command_beside_a_live_upload_leaves_it_alone(
    make_api_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload sends half its body and pauses; an operator runs `admin requeue` on another
    calc meanwhile. The part file being written must not be touched, and the upload completes
    with every byte (sha256)."""
    server = make_api_server(subprocess=True)
    api = Api(server)
    data = os.urandom(4 * MIB)
    calc = api.register({"big.bin": data})
    other = api.queued()
    url = urlsplit(server.url)
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    part = server.data_dir / "calcs" / calc["id"] / "parts" / "inputs" / "big.bin"
    half = len(data) // 2
    with (
        socket.create_connection((url.hostname, url.port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname=url.hostname) as sock,
    ):
        head = (
            f"PUT /api/v1/calcs/{calc['id']}/inputs/big.bin?offset=0 HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\nAuthorization: Bearer {server.tokens['alice']}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data[:half])
        wait_until(lambda: part.exists() and part.stat().st_size == half, "the first half")
        monkeypatch.setenv("EXTCOMP_API_CONFIG", str(server.config_path))
        assert api_main(["admin", "requeue", other["id"]]) == 0
        assert part.stat().st_size == half, "the live upload's part file was changed"
        sock.sendall(data[half:])
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 200"), answer
    got = api.call("GET", f"/api/v1/calcs/{calc['id']}/inputs/big.bin")
    assert sha(got.content) == sha(data)
    assert api.get(calc["id"])["state"] == "queued"


def test_a_damaged_file_is_an_error_never_a_short_body(
    make_api_server: Callable[..., RunningServer],
) -> None:
    server = make_api_server()
    api = Api(server)
    calc = api.queued({"in.txt": b"x" * 100_000})
    stored = server.data_dir / "calcs" / calc["id"] / "inputs" / "in.txt"
    with stored.open("r+b") as fh:
        fh.truncate(10)  # the disk lost most of it
    resp = api.call("GET", f"/api/v1/calcs/{calc['id']}/inputs/in.txt")  # no hang: an answer
    assert resp.status_code == 500 and resp.json()["error"] == "damaged"
    assert "10 bytes on disk, 100000 recorded" in resp.json()["message"]


def test_server_disk_full_is_a_state_not_a_crash(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "small", 24) as small:
        server = make_api_server(
            data_dir=str(small / "data"), min_free_bytes=MIB, registered_expiry_seconds=3
        )
        api = Api(server)

        def register(name: str, size: int) -> tuple[int, dict[str, object]]:
            entry = {"name": name, "size": size, "sha256": "0" * 64}
            body = {"site": "site-a", "command": "sample", "inputs": [entry]}
            resp = api.call("POST", "/api/v1/calcs", json=body)
            return resp.status_code, resp.json()

        # What can never fit is refused before a byte is sent.
        status, body = register("huge.bin", shutil.disk_usage(small).free + 1)
        assert status == 507 and body["error"] == "insufficient_storage"
        # Declared sizes are reserved: two 9 MiB calcs fit, a third does not, though none of
        # them has sent anything yet (concurrent uploads can never overfill the disk).
        a_data, b_data = os.urandom(9 * MIB), os.urandom(9 * MIB)
        a = api.register({"a.bin": a_data})
        b = api.register({"b.bin": b_data})
        status, body = register("c.bin", 9 * MIB)
        assert status == 507 and "promised to uploads in progress" in str(body["message"])
        # The disk fills behind the server's back during an upload: 507, the space is given
        # back, nothing is recorded; once there is room again the upload completes whole.
        filler = fill(small, leave=2 * MIB)
        resp = api.put(a["id"], "a.bin", a_data)
        assert resp.status_code == 507 and resp.json()["error"] == "insufficient_storage"
        assert api.get(a["id"])["inputs"][0]["received"] == 0
        filler.unlink()
        resp = api.put(a["id"], "a.bin", a_data)
        assert resp.status_code == 200 and resp.json()["complete"] is True
        got = api.call("GET", f"/api/v1/calcs/{a['id']}/inputs/a.bin")
        assert sha(got.content) == sha(a_data)
        # b's client never came back: its registration expires and cannot run later.
        wait_until(lambda: api.get(b["id"])["state"] == "failed", "b to expire")
        assert "expired" in api.get(b["id"])["reason"]
        log = server.log_path.read_text()
        assert " 500 " not in log and "Traceback" not in log
