"""The original protocol against a subprocess server: kill -9 mid-calc loses nothing, and a large
file goes in and out without the server holding it in memory."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer
from tests.webapi.mint_standin import JP_STDOUT, OriginalPoller, OriginalWorkflow
from tests.webapi.mintfix import SITE, add_mint_users, mint_config, write_scripts
from webapi.mint.codec.ids import calc_id_of


def _clients(
    server: RunningServer, tokens: dict[str, str], base: Path
) -> tuple[OriginalWorkflow, OriginalPoller]:
    ca = str(server.ca_file)
    return (
        OriginalWorkflow(server.url, SITE, tokens["mia"], ca),
        OriginalPoller(SITE, server.url, tokens["mia"], base, ca),
    )


@pytest.mark.slow
def test_server_killed_mid_calc_loses_nothing(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    commands = write_scripts(tmp_path / "scripts")
    config = mint_config(commands)
    server = make_api_server(subprocess=True, **config)
    tokens = add_mint_users(server)
    wf, poller = _clients(server, tokens, tmp_path / "calcs")
    data = os.urandom(300_000)
    aid = wf.submit(commands["ok.sh"], {"in.txt": data}, ["out.txt"])
    assert aid is not None
    # A second calc registered but never allowed, to check it stays held across the restart.
    held_body = {"calc-info": wf.calc_info(commands["ok.sh"], {"in.txt": b"h"}, [], "")}
    held = wf.first(wf.call("POST", "add-calcinfo", json=held_body))["accept_id"]
    poller.ignore_next = False
    assert poller.request() == aid
    info = poller.params(aid)
    assert info is not None
    poller.call("POST", "calc-params-complete", json=poller.ids(aid))
    poller.call("POST", "calc-start", json=poller.ids(aid))
    result, files = poller.run_program(aid, info)
    server.kill()
    server = make_api_server(subprocess=True, base_dir=server.base_dir, **config)
    wf, poller2 = _clients(server, tokens, tmp_path / "calcs2")
    poller.root = poller2.root  # the same poller process, pointed at the restarted server
    assert wf.wait_for(aid, "calc-progress", ("running",), 5) == "running"
    poller.call("POST", "calc-end", json={**poller.ids(aid), "result": result})
    poller.call("POST", "send-results", json={**poller.ids(aid), "result_files": files})
    poller.call("POST", "end-send", json={**poller.ids(aid), "result": "end send"})
    res = wf.finish(aid, tmp_path)
    assert res.exit_code == 0 and (tmp_path / "out.txt").read_bytes() == data
    assert (tmp_path / JP_STDOUT).read_text().startswith("out from")
    server.tokens.update(tokens)
    api = Api(server, "mia")
    assert api.get(str(calc_id_of(held)))["state"] == "registered"
    poller2.ignore_next = False
    assert poller2.request() is None  # held: not offered until allow-wait-calc
    assert wf.first(wf.call("POST", "allow-wait-calc", json={"accept_id": held}))["code"] == 200
    assert poller2.request() == held


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _body(size: int, info: dict[str, Any]) -> Sized:
    """add-calcinfo's JSON with a `size`-byte file, generated piecewise (the client's memory is
    not what this test measures, but keep it modest)."""
    head, tail = json.dumps({"calc-info": info}).encode().split(b'"@@FILE@@"')
    end = b'", "application/octet-stream;", "charset=binary"]' + tail
    pieces = itertools.chain([head + b'["'], _b64(size), [end])
    return _sized(pieces, size, len(head) + 2 + len(end))


def _content(size: int, doc: dict[str, Any]) -> Sized:
    head, tail = json.dumps(doc).encode().split(b'"@@FILE@@"')
    pieces = itertools.chain([head + b'"'], _b64(size), [b'"' + tail])
    return _sized(pieces, size, len(head) + len(tail) + 2)


class Sized:
    """A generated body with a Content-Length, as the original clients send (requests, json=)."""

    def __init__(self, pieces: Iterator[bytes], length: int) -> None:
        self.pieces, self.length, self.pending = pieces, length, b""

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        while len(self.pending) < max(n, 1):
            piece = next(self.pieces, b"")
            if not piece:
                break
            self.pending += piece
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


def _sized(pieces: Iterator[bytes], size: int, extra: int) -> Sized:
    return Sized(pieces, 4 * ((size + 2) // 3) + extra)


def _b64(size: int) -> Iterator[bytes]:
    block = os.urandom(3 << 14)  # 48 KiB: small pieces keep Sized.read cheap
    for _ in range(size // len(block)):
        yield base64.b64encode(block)
    yield base64.b64encode(block[: size % len(block)])  # the last piece: padding is fine here


@pytest.mark.slow
def test_large_file_in_and_out_keeps_server_memory_flat(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    commands = write_scripts(tmp_path / "scripts")
    server = make_api_server(subprocess=True, **mint_config(commands))
    assert server.process is not None
    tokens = add_mint_users(server)
    wf, poller = _clients(server, tokens, tmp_path / "calcs")
    # Warm up (imports, TLS, thread pool) with a small calc through every route.
    small = wf.submit(commands["ok.sh"], {"in.txt": b"warm"}, ["out.txt"])
    poller.ignore_next = False
    assert small is not None and poller.request() == small and poller.params(small)
    wf.cancel(small)
    before = _hwm_kib(server.process.pid)
    size = int(os.environ.get("MINT_TEST_MIB", "64")) << 20
    info = wf.calc_info(commands["ok.sh"], {}, ["out.txt"], "")
    info["parameter_files"] = {"big.bin": "@@FILE@@"}
    resp = requests.post(
        wf.root + "add-calcinfo",
        data=_body(size, info),
        headers=wf.headers,
        verify=wf.verify,
        timeout=300,
    )
    aid = resp.json()["errors"][0]["accept_id"]
    wf.call("POST", "allow-wait-calc", json={"accept_id": aid})
    assert poller.request() == aid
    # calc-params streamed back: read it in pieces, check the file's digest.
    resp = requests.get(
        poller.root + "calc-params",
        params=poller.ids(aid),
        headers=poller.headers,
        verify=poller.verify,
        stream=True,
        timeout=300,
    )
    assert int(resp.headers["Content-Length"]) > size * 4 // 3
    received = sum(len(chunk) for chunk in resp.iter_content(1 << 20))
    assert received == int(resp.headers["Content-Length"])
    # The same size back: send-results streamed in, get-calc-result streamed out.
    for step, extra in (
        ("calc-params-complete", {}),
        ("calc-start", {}),
        ("calc-end", {"result": "calc end"}),
    ):
        assert (
            poller.first(poller.call("POST", step, json={**poller.ids(aid), **extra}))["code"]
            == 200
        )
    doc = {**poller.ids(aid), "result_files": {"out.txt": {"content": "@@FILE@@"}}}
    resp = requests.post(
        poller.root + "send-results",
        data=_content(size, doc),
        headers=poller.headers,
        verify=poller.verify,
        timeout=300,
    )
    assert resp.json()["errors"][0]["code"] == 200, resp.text
    resp = requests.get(
        wf.root + "get-calc-result",
        params={"accept_id": aid},
        headers=wf.headers,
        json={"accept_id": aid},
        verify=wf.verify,
        stream=True,
        timeout=300,
    )
    received = sum(len(chunk) for chunk in resp.iter_content(1 << 20))
    assert received == int(resp.headers["Content-Length"]) > size * 4 // 3
    growth = (_hwm_kib(server.process.pid) - before) // 1024
    assert growth < 32, f"server peak RSS grew by {growth} MiB for {size >> 20} MiB in and out"
    server.tokens.update(tokens)
    calc = Api(server, "mia").get(str(calc_id_of(aid)))
    assert calc["inputs"][0]["size"] == size and calc["state"] == "succeeded"
    assert calc["results"][0]["size"] == size
    digest = hashlib.sha256()
    path = server.data_dir / "calcs" / calc["id"] / "inputs" / "big.bin"
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == calc["inputs"][0]["sha256"]
    print(f"server VmHWM growth, 64 MiB in and out through the original routes: {growth} MiB")
