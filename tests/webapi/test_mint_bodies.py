"""What the original protocol's POST routes take: JSON only (415 otherwise) and the documents'
shapes (400 with the reason otherwise), with nothing stored for a refused body."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.webapi.apihelp import Api, snapshot
from tests.webapi.conftest import RunningServer
from tests.webapi.mint_standin import JP_STDOUT, OriginalPoller, OriginalWorkflow
from tests.webapi.mintfix import MintEnv, make_env
from webapi.mint.codec.ids import calc_id_of


@pytest.fixture
def env(make_api_server: Callable[..., RunningServer], tmp_path: Path) -> MintEnv:
    return make_env(make_api_server, tmp_path)


def _unchanged(env: MintEnv, before: dict[str, bytes]) -> None:
    assert snapshot(env.server.data_dir) == before
    staging = env.server.data_dir / "mint-staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def _post(
    env: MintEnv, name: str, content_type: str | None, user: str = "mia", **kw: Any
) -> requests.Response:
    headers = {"Authorization": f"Bearer {env.tokens[user]}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(
        f"{env.server.url}/mi-distcomp-api/{name}",
        headers=headers,
        verify=str(env.server.ca_file),
        timeout=30,
        **kw,
    )


def _calc_info(env: MintEnv, wf: OriginalWorkflow) -> dict[str, Any]:
    return {"calc-info": wf.calc_info(env.commands["ok.sh"], {"in.txt": b"abc"}, ["out.txt"], "")}


# -- content types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "form"),
    [
        ("text/plain", False),
        ("text/plain; charset=utf-8", False),
        ("application/x-www-form-urlencoded", True),
        (None, False),
        ("multipart/form-data; boundary=x", False),
        ("application/jsonp", False),
    ],
)
def test_add_calcinfo_takes_json_only(env: MintEnv, content_type: str | None, form: bool) -> None:
    before = snapshot(env.server.data_dir)
    body = json.dumps(_calc_info(env, env.wf())).encode()
    data: Any = {"calc-info": body.decode()} if form else body
    resp = _post(env, "add-calcinfo", content_type, data=data)
    first = resp.json()["errors"][0]
    assert (resp.status_code, first["code"], first["error"]) == (415, 415, "unsupported_media_type")
    assert first["message"].startswith("add-calcinfo: ") and "application/json" in first["message"]
    assert resp.headers["Content-Type"].startswith("application/json")
    _unchanged(env, before)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_content_types_are_taken(env: MintEnv, content_type: str) -> None:
    body = json.dumps(_calc_info(env, env.wf())).encode()
    resp = _post(env, "add-calcinfo", content_type, data=body)
    assert resp.status_code == 200 and resp.json()["errors"][0]["code"] == 200, resp.text


def test_every_post_route_checks_the_content_type(env: MintEnv) -> None:
    wf, poller = env.wf(), env.poller()
    aid = wf.submit(env.commands["ok.sh"], {"in.txt": b"abc"}, ["out.txt"])
    assert aid is not None
    poller.ignore_next = False
    assert poller.request() == aid and poller.params(aid) is not None
    # The claim is confirmed once its answer has gone out: wait for that, for settled snapshots.
    api = Api(env.server, "mia")
    deadline = time.monotonic() + 10
    while api.get(str(calc_id_of(aid)))["lease"]["expires"] < "2100":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ids = {"accept_id": aid, "site_id": poller.site}
    before = snapshot(env.server.data_dir)
    for name, doc in (
        ("allow-wait-calc", {"accept_id": aid}),
        ("cancel-wait-calc", {"accept_id": aid}),
        ("calc-params-complete", ids),
        ("calc-start", ids),
        ("calc-end", {**ids, "result": "calc end"}),
        ("send-results", {**ids, "result_files": {"out.txt": {"content": "QUJD"}}}),
        ("end-send", {**ids, "result": "end send"}),
    ):
        resp = _post(env, name, "text/plain", data=json.dumps(doc).encode())
        first = resp.json()["errors"][0]
        assert (resp.status_code, first["code"]) == (415, 415), (name, first)
        assert first["message"].startswith(f"{name}: ")
        _unchanged(env, before)
    assert api.get(str(calc_id_of(aid)))["state"] == "running"


def test_get_routes_do_not_check_the_content_type(env: MintEnv) -> None:
    aid = env.wf().submit(env.commands["ok.sh"], {"in.txt": b"abc"}, ["out.txt"])
    resp = requests.get(
        f"{env.server.url}/mi-distcomp-api/calc-status",
        params={"accept_id": aid},
        data=b"anything",
        headers={"Authorization": f"Bearer {env.tokens['mia']}", "Content-Type": "text/plain"},
        verify=str(env.server.ca_file),
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json()["errors"][0]["message"] == "status:none"


def test_refused_body_is_read_and_the_connection_kept(env: MintEnv) -> None:
    """The client sending a large refused body still gets the answer, on a connection that
    serves its next request."""
    before = snapshot(env.server.data_dir)
    info = env.wf().calc_info(env.commands["ok.sh"], {"in.txt": b"x" * (4 << 20)}, [], "")
    body = json.dumps({"calc-info": info}).encode()
    url = f"{env.server.url}/mi-distcomp-api/add-calcinfo"
    with requests.Session() as session:
        # verify= per request: a session's verify loses to REQUESTS_CA_BUNDLE in the environment.
        kw: dict[str, Any] = {"data": body, "verify": str(env.server.ca_file), "timeout": 30}
        auth = {"Authorization": f"Bearer {env.tokens['mia']}"}
        resp = session.post(url, headers={**auth, "Content-Type": "text/plain"}, **kw)
        assert resp.status_code == 415 and resp.headers.get("Connection") != "close"
        _unchanged(env, before)
        resp = session.post(url, headers={**auth, "Content-Type": "application/json"}, **kw)
        assert resp.status_code == 200, resp.text


# -- shapes ---------------------------------------------------------------------------------

_MISSING = object()


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("parameter_files", [], "'parameter_files' must be an object"),
        ("parameter_files", "in.txt", "'parameter_files' must be an object"),
        ("parameter_files", _MISSING, "'parameter_files' is missing"),
        ("parameter_files", {"in.txt": {"content": "QUJD"}}, "[base64, mime, charset]"),
        ("result_files", "out.txt", "'result_files' must be an object"),
        ("result_files", 0, "'result_files' must be an object"),
        ("result_files", {}, "no result files"),
        ("result_files", [], "no result files"),
        ("result_files", _MISSING, "'result_files' is missing"),
        ("result_files", {"out.txt": "x"}, "wanted result 'out.txt' must be an object"),
        ("result_files", {"out.txt": []}, "wanted result 'out.txt' must be an object"),
        ("result_files", ["out.txt", 3], "must be a bare name"),
    ],
)
def test_malformed_calc_info_is_refused(env: MintEnv, key: str, value: Any, words: str) -> None:
    wf = env.wf()
    doc = _calc_info(env, wf)
    if value is _MISSING:
        del doc["calc-info"][key]
    else:
        doc["calc-info"][key] = value
    before = snapshot(env.server.data_dir)
    resp = wf.call("POST", "add-calcinfo", json=doc)
    first = wf.first(resp)
    assert (resp.status_code, first["code"], first["error"]) == (400, 400, "bad_request"), first
    assert words in first["message"] and "nothing stored" in first["message"], first
    _unchanged(env, before)
    assert Api(env.server, "mia").call("GET", "/api/v1/calcs").json()["calcs"] == []


def _at_calc_end(env: MintEnv) -> tuple[OriginalPoller, str]:
    poller = env.poller()
    aid = env.wf().submit(env.commands["ok.sh"], {"in.txt": b"abc"}, ["out.txt"])
    assert aid is not None
    poller.ignore_next = False
    assert poller.request() == aid and poller.params(aid) is not None
    for name, extra in (
        ("calc-params-complete", {}),
        ("calc-start", {}),
        ("calc-end", {"result": "calc end"}),
    ):
        assert poller.call("POST", name, json={**poller.ids(aid), **extra}).status_code == 200
    return poller, aid


@pytest.mark.parametrize(
    ("files", "words"),
    [
        (["out.txt"], "'result_files' must be an object"),
        ("QUJD", "'result_files' must be an object"),
        (_MISSING, "'result_files' is missing"),
        ({}, "no result files at all"),
        ({"out.txt": "QUJD"}, "result 'out.txt' must be an object"),
        ({"out.txt": ["QUJD", "text/plain;", "x"]}, "result 'out.txt' must be an object"),
        ({"out.txt": None}, "result 'out.txt' must be an object"),
        ({"out.txt": {"mimetype1": "text/plain;"}}, 'needs a "content" string'),
    ],
)
def test_malformed_results_are_refused(env: MintEnv, files: Any, words: str) -> None:
    poller, aid = _at_calc_end(env)
    doc: dict[str, Any] = dict(poller.ids(aid))
    if files is not _MISSING:
        doc["result_files"] = files
    before = snapshot(env.server.data_dir)
    resp = poller.call("POST", "send-results", json=doc)
    first = poller.first(resp)
    assert (resp.status_code, first["code"], first["error"]) == (400, 400, "bad_request"), first
    assert words in first["message"] and "nothing stored" in first["message"], first
    _unchanged(env, before)
    # Still waiting for its results: a good upload is taken.
    good = {JP_STDOUT: {"content": "", "mimetype1": "Error", "mimetype2": "none"}}
    resp = poller.call("POST", "send-results", json={**poller.ids(aid), "result_files": good})
    assert resp.status_code == 200, resp.text
