"""Small helpers for the API server tests: a requests wrapper and raw-socket uploads."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from tests.webapi.conftest import RunningServer


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Api:
    """Calls one server as one user; every answer is checked for stack traces."""

    def __init__(self, server: RunningServer, user: str | None = "alice") -> None:
        self.server, self.user = server, user
        # No long-lived Session: its pooled TLS sockets would only be closed by the garbage
        # collector, in whichever later test that happens (an unraisable ResourceWarning there).
        self.headers = {"Authorization": f"Bearer {server.tokens[user]}"} if user else {}

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        # verify= per request: a session's verify loses to REQUESTS_CA_BUNDLE in the environment.
        kw.setdefault("verify", str(self.server.ca_file))
        headers = {**self.headers, **kw.pop("headers", {})}
        resp = requests.request(method, self.server.url + path, timeout=30, headers=headers, **kw)
        assert "Traceback" not in resp.text and 'File "' not in resp.text
        if resp.status_code >= 400:
            body = resp.json()
            assert set(body) >= {"error", "message"} and body["message"]
        return resp

    def register(self, files: dict[str, bytes] | None = None, **kw: Any) -> dict[str, Any]:
        files = {"in.txt": b"hello"} if files is None else files
        body = {
            "site": "site-a",
            "command": "sample",
            "args": ["--steps", "1"],
            "inputs": [{"name": n, "size": len(d), "sha256": sha(d)} for n, d in files.items()],
            **kw,
        }
        resp = self.call("POST", "/api/v1/calcs", json=body)
        assert resp.status_code == 201, resp.text
        calc: dict[str, Any] = resp.json()
        return calc

    def put(
        self,
        calc_id: str,
        name: str,
        data: bytes,
        offset: int = 0,
        kind: str = "inputs",
        **params: Any,
    ) -> requests.Response:
        return self.call(
            "PUT",
            f"/api/v1/calcs/{calc_id}/{kind}/{quote(name, safe='')}",
            params={"offset": offset, **params},
            data=data,
        )

    def queued(self, files: dict[str, bytes] | None = None, **kw: Any) -> dict[str, Any]:
        files = {"in.txt": b"hello"} if files is None else files
        calc = self.register(files, **kw)
        for name, data in files.items():
            assert self.put(calc["id"], name, data).status_code == 200
        return self.get(calc["id"])

    def get(self, calc_id: str) -> dict[str, Any]:
        resp = self.call("GET", f"/api/v1/calcs/{calc_id}")
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        return doc

    def claim(self, site: str = "site-a", wait: float = 0, poller: str = "p1") -> requests.Response:
        return self.call(
            "POST", f"/api/v1/sites/{site}/claim", json={"poller": poller, "wait": wait}
        )

    def claimed(self, **kw: Any) -> tuple[dict[str, Any], str]:
        resp = self.claim(**kw)
        assert resp.status_code == 200, resp.text
        return resp.json()["calc"], resp.json()["lease"]["id"]


def raw_partial_put(server: RunningServer, path: str, declared: int, body: bytes) -> None:
    """Send a PUT announcing `declared` bytes but only `body`, then drop the connection."""
    url = urlsplit(server.url)
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    with (
        socket.create_connection((url.hostname, url.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=url.hostname) as sock,
    ):
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {server.tokens['alice']}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the data dir except volatile ones (lock, poller-seen records)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if name != ".lock" and not rel.startswith("pollers"):
                out[rel] = path.read_bytes()
    return out
