"""Hostile bodies on the original protocol's routes: a clear answer each, the disk unchanged."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.webapi.apihelp import Api, snapshot
from tests.webapi.conftest import RunningServer
from tests.webapi.mint_standin import OriginalPoller
from tests.webapi.mintfix import SITE, MintEnv, make_env
from webapi.mint.codec.ids import calc_id_of


@pytest.fixture
def env(make_api_server: Callable[..., RunningServer], tmp_path: Path) -> MintEnv:
    return make_env(make_api_server, tmp_path, quota_bytes=2 << 20)


def _unchanged(env: MintEnv, before: dict[str, bytes]) -> None:
    assert snapshot(env.server.data_dir) == before
    staging = env.server.data_dir / "mint-staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def _add(
    env: MintEnv, files: dict[str, Any], raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    wf = env.wf()
    if raw is None:
        info = wf.calc_info(env.commands["ok.sh"], {}, ["out.txt"], "")
        info["parameter_files"] = files
        raw = json.dumps({"calc-info": info}).encode()
    resp = wf.call("POST", "add-calcinfo", data=raw)
    return resp.status_code, resp.json()["errors"][0]


@pytest.mark.parametrize(
    ("files", "status", "words"),
    [
        ({"in.txt": ["QUJD!!==", "text/plain;", "charset=us-ascii"]}, 400, "not valid base64"),
        ({"in.txt": ["QUJDRA==QUJD", "text/plain;", "x"]}, 400, "not valid base64"),
        ({"in.txt": ["Q", "text/plain;", "x"]}, 400, "not valid base64"),
        ({"../evil": ["QUJD", "text/plain;", "x"]}, 400, "'../evil' must be a bare name"),
        ({"a/b.txt": ["QUJD", "text/plain;", "x"]}, 400, "must be a bare name"),
        ({"..": ["QUJD", "text/plain;", "x"]}, 400, "'..' part"),
        ({"in.txt": ["QUJD", "text/plain;"]}, 400, "[base64, mime, charset]"),
        (
            {"in.txt": ["", "", ""], "big": [base64.b64encode(b"x" * (3 << 20)).decode(), "", ""]},
            413,
            "over the quota",
        ),
        ({"big": [base64.b64encode(b"x" * (12 << 20)).decode(), "", ""]}, 413, "quota"),
    ],
)
def test_bad_registrations_store_nothing(
    env: MintEnv, files: dict[str, Any], status: int, words: str
) -> None:
    before = snapshot(env.server.data_dir)
    got, first = _add(env, files)
    assert (got, first["code"]) == (status, status) and words in first["message"], first
    _unchanged(env, before)


def test_truncated_and_malformed_json(env: MintEnv) -> None:
    before = snapshot(env.server.data_dir)
    whole = json.dumps(
        {
            "calc-info": {
                "command": env.commands["ok.sh"],
                "remote-site": SITE,
                "parameter_files": {"in.txt": ["QUJDRA==", "", ""]},
            }
        }
    ).encode()
    for raw, words in (
        (whole[:-30], "ended early"),
        (whole + b"{}", "after the JSON document"),
        (b"[1, 2]", "must be an object"),
        (b"", "ended early"),
        (b'{"calc-info": {"a": "\\ud800"}}', "bad string"),
    ):
        status, first = _add(env, {}, raw)
        assert status == 400 and words in first["message"], first
    _unchanged(env, before)


def test_connection_dropped_mid_body(env: MintEnv) -> None:
    before = snapshot(env.server.data_dir)
    url = urlsplit(env.server.url)
    ctx = ssl.create_default_context(cafile=str(env.server.ca_file))
    body = b'{"calc-info": {"parameter_files": {"in.txt": ["' + b"QUJD" * 100000
    with (
        socket.create_connection((url.hostname, url.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=url.hostname) as sock,
    ):
        head = (
            f"POST /mi-distcomp-api/add-calcinfo HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {env.tokens['mia']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) * 2}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
    # The server notices the end and cleans up; give it a moment.
    Api(env.server, "mia").call("GET", "/api/v1/calcs")
    for _ in range(50):
        if snapshot(env.server.data_dir) == before:
            break
        time.sleep(0.1)
    _unchanged(env, before)


def _taken(env: MintEnv, poller: OriginalPoller) -> str:
    aid = env.wf().submit(env.commands["ok.sh"], {"in.txt": b"abc"}, ["out.txt"])
    assert aid is not None
    poller.ignore_next = False
    assert poller.request() == aid and poller.params(aid) is not None
    # The server confirms the claim once the whole answer has gone out, just after the poller
    # read it: wait for that, so the snapshots below see a settled calc.
    api = Api(env.server, "mia")
    deadline = time.monotonic() + 10
    while api.get(str(calc_id_of(aid)))["lease"]["expires"] < "2100":
        assert time.monotonic() < deadline, "the claim was never confirmed"
        time.sleep(0.05)
    return aid


def _send(poller: OriginalPoller, aid: str, files: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = poller.call("POST", "send-results", json={**poller.ids(aid), "result_files": files})
    return resp.status_code, resp.json()["errors"][0]


def test_bad_result_uploads_change_nothing(env: MintEnv) -> None:
    poller = env.poller()
    aid = _taken(env, poller)
    good = {"out.txt": {"content": "QUJD", "mimetype1": "text/plain;", "mimetype2": "x"}}
    # Before calc-end: the wrong state for results.
    before = snapshot(env.server.data_dir)
    status, first = _send(poller, aid, good)
    assert status == 409 and "send calc-params-complete next" in first["message"]
    _unchanged(env, before)
    for name, extra in (
        ("calc-params-complete", {}),
        ("calc-start", {}),
        ("calc-end", {"result": "calc end"}),
    ):
        assert poller.call("POST", name, json={**poller.ids(aid), **extra}).status_code == 200
    before = snapshot(env.server.data_dir)
    for files, words in (
        ({"../x": {"content": "QUJD"}}, "bare name"),
        ({"sub/x": {"content": "QUJD"}}, "bare name"),
        ({"out.txt": {"content": "@@@@"}}, "not valid base64"),
        ({"out.txt": {"content": base64.b64encode(b"y" * (3 << 20)).decode()}}, "quota"),
        ({"out.txt": "QUJD"}, "must be an object"),
    ):
        status, first = _send(poller, aid, files)
        assert status in (400, 413) and words in first["message"], first
        _unchanged(env, before)
    # The right upload works; after it the calc is final and a second upload is refused.
    assert _send(poller, aid, good)[1]["code"] == 200
    before = snapshot(env.server.data_dir)
    status, first = _send(poller, aid, good)
    assert status == 409 and "succeeded" in first["message"]
    _unchanged(env, before)
    api = Api(env.server, "mia")
    assert api.get(str(calc_id_of(aid)))["state"] == "succeeded"


def test_results_for_a_calc_not_taken(env: MintEnv) -> None:
    aid = env.wf().submit(env.commands["ok.sh"], {"in.txt": b"abc"}, ["out.txt"])
    assert aid is not None
    poller = env.poller()
    before = snapshot(env.server.data_dir)
    for name, body in (
        # A well-formed body: a malformed one is refused first for its shape (400).
        ("send-results", {"result_files": {"out.txt": {"content": "", "mimetype1": ""}}}),
        ("calc-start", {}),
        ("calc-end", {"result": "calc end"}),
        ("end-send", {}),
    ):
        resp = poller.call("POST", name, json={**poller.ids(aid), **body})
        first = resp.json()["errors"][0]
        assert resp.status_code == 409 and "take it with calc-params first" in first["message"]
    resp = poller.call("POST", "calc-end", json={**poller.ids(aid), "result": "fine"})
    assert resp.status_code == 400
    _unchanged(env, before)


def test_chunked_body_is_refused(env: MintEnv) -> None:
    before = snapshot(env.server.data_dir)
    wf = env.wf()
    body = json.dumps({"calc-info": wf.calc_info(env.commands["ok.sh"], {"a": b"x"}, [], "")})
    resp = wf.call("POST", "add-calcinfo", data=iter([body.encode()]))  # a generator: chunked
    first = resp.json()["errors"][0]
    assert resp.status_code == 411 and "Content-Length" in first["message"]
    _unchanged(env, before)
