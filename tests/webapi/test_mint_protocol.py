"""The original MInt programs (stand-ins) against our server: round trips, failures, access."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer
from tests.webapi.mint_standin import JP_STDERR, JP_STDOUT, PollerThread
from tests.webapi.mintfix import SITE, MintEnv, make_env
from webapi.mint.codec.ids import accept_id_of, calc_id_of


@pytest.fixture
def env(make_api_server: Callable[..., RunningServer], tmp_path: Path) -> MintEnv:
    return make_env(make_api_server, tmp_path)


def test_success_round_trip(env: MintEnv, tmp_path: Path) -> None:
    wf = env.wf()
    data = "入力 data\n".encode() * 1000
    with PollerThread(env.poller()) as poller:
        res = wf.run(
            env.commands["ok.sh"],
            {"in.txt": data, "empty.dat": None},
            ["out.txt"],
            tmp_path,
            params="--anything goes",
        )
    assert res.exit_code == 0 and res.status == "completed", wf.log
    assert (tmp_path / "out.txt").read_bytes() == data
    assert (tmp_path / JP_STDOUT).read_text().startswith("out from ")
    assert (tmp_path / JP_STDERR).read_text() == "warn\n"
    assert res.files["out.txt"]["mimetype1"] == "text/plain;"
    assert res.files["out.txt"]["mimetype2"] == "charset=utf-8"
    assert res.files[JP_STDERR]["mimetype2"] == "charset=us-ascii"
    # Every answer had the two keys the programs print, success as the integer 200.
    assert all(isinstance(msg, str) and ":" in msg for _c, _code, msg in wf.log)
    assert [c for c, code, _m in wf.log if code == 200][:2] == ["add-calcinfo", "allow-wait-calc"]
    # calc-params gave the registration back: types, the empty input, placeholders, parameters.
    assert res.accept_id is not None
    info = poller.calc_infos[res.accept_id]
    assert info["parameter_files"]["empty.dat"] == ["", "", ""]
    assert info["parameter_files"]["in.txt"][1:] == ["text/plain;", "charset=us-ascii"]
    assert set(info["result_files"]) == {"out.txt", JP_STDOUT, JP_STDERR}
    assert info["parameters"] == "--anything goes" and info["remote-site"] == SITE
    # The same calc through the native API: owned by mia, succeeded, results listed.
    calc = Api(env.server, "mia").get(str(calc_id_of(res.accept_id)))
    assert calc["state"] == "succeeded" and calc["user"] == "mia" and calc["args"] == []
    assert {f["name"] for f in calc["results"]} == {"out.txt", JP_STDOUT, JP_STDERR}
    assert {f["name"]: f["size"] for f in calc["inputs"]} == {"in.txt": len(data), "empty.dat": 0}


def test_program_failure_still_delivers_logs(env: MintEnv, tmp_path: Path) -> None:
    wf = env.wf()
    with PollerThread(env.poller()):
        res = wf.run(env.commands["fail.sh"], {"in.txt": b"x"}, ["out.txt"], tmp_path)
    assert res.exit_code == 1 and res.status == "abnormal"
    assert (tmp_path / JP_STDERR).read_text() == "it went wrong\n"
    assert (tmp_path / "out.txt").read_text() == "partial\n"
    calc = Api(env.server, "mia").get(str(calc_id_of(str(res.accept_id))))
    assert calc["state"] == "failed" and "abnormal" in calc["reason"]


def test_missing_result_file(env: MintEnv, tmp_path: Path) -> None:
    wf = env.wf()
    with PollerThread(env.poller()):
        res = wf.run(
            env.commands["partial.sh"], {"in.txt": b"x"}, ["out.txt", "other.txt"], tmp_path
        )
    assert res.exit_code == 0 and res.status == "completed"
    assert (
        res.files["other.txt"]["mimetype1"] == "Error" and res.files["other.txt"]["content"] == ""
    )
    assert "other.txt" in res.files["other.txt"]["mimetype2"]
    assert (tmp_path / "out.txt").exists() and not (tmp_path / "other.txt").exists()


def test_unknown_site_and_command_off_the_list(env: MintEnv, tmp_path: Path) -> None:
    wf = env.wf(site="nowhere")
    assert wf.submit(env.commands["ok.sh"], {"in.txt": b"x"}, []) is None
    _call, code, message = wf.log[-1]
    assert code == 400 and "unknown site 'nowhere'" in message
    wf = env.wf()
    assert wf.submit("rm -rf /", {"in.txt": b"x"}, []) is None
    _call, code, message = wf.log[-1]
    assert code == 403 and "not allowed on site 'mint-a'" in message
    poller = env.poller(site="nowhere")
    resp = poller.call("GET", "calc-request", params={"site_id": "nowhere"})
    assert resp.status_code == 400 and "unknown site" in poller.first(resp)["message"]
    assert Api(env.server, "mia").call("GET", "/api/v1/calcs").json()["calcs"] == []


def test_tokens_and_sites_are_bound(env: MintEnv) -> None:
    wf = env.wf()
    accept_id = wf.submit(env.commands["ok.sh"], {"in.txt": b"x"}, ["out.txt"])
    assert accept_id is not None
    # Another user's token: neither the workflow side nor a poller of the same site sees it.
    other = env.wf("ben")
    resp = other.call("GET", "calc-status", params={"accept_id": accept_id})
    assert resp.status_code == 403 and other.first(resp)["message"].startswith("status:error: ")
    ben = env.poller("ben")
    ben.ignore_next = False
    assert ben.request() is None and ben.log[-1][1] == "0300"
    resp = ben.call("GET", "calc-params", params=ben.ids(accept_id))
    assert resp.status_code == 403 and "another user" in ben.first(resp)["message"]
    # The right user on the wrong site: nothing offered, nothing handed out.
    wrong = env.poller(site="site-a")
    wrong.ignore_next = False
    assert wrong.request() is None and wrong.log[-1][1] == "0300"
    resp = wrong.call("GET", "calc-params", params=wrong.ids(accept_id))
    assert resp.status_code == 403 and "not a calc of site 'site-a'" in wrong.first(resp)["message"]
    # An unknown token: HTTP 403 with the envelope, for every route.
    for method, name in (("GET", "calc-status"), ("POST", "add-calcinfo"), ("GET", "calc-request")):
        resp = requests.request(
            method,
            f"{env.server.url}/mi-distcomp-api/{name}",
            json={},
            timeout=10,
            headers={"Authorization": "Bearer " + "ab" * 32},
            verify=str(env.server.ca_file),
        )
        first = resp.json()["errors"][0]
        assert (
            resp.status_code == 403 and first["code"] == 403 and "unknown token" in first["message"]
        )
        assert ":" in first["message"]
    # The owner's poller still gets it.
    mia = env.poller()
    mia.ignore_next = False
    assert mia.request() == accept_id
    log = env.server.log_path.read_text()
    assert "calc-request 200 user=mia" in log
    assert not any(token in log for token in env.tokens.values())  # never a token in the log


def test_first_offer_ignored_is_offered_again(env: MintEnv) -> None:
    wf = env.wf()
    accept_id = wf.submit(env.commands["ok.sh"], {"in.txt": b"x"}, ["out.txt"])
    poller = env.poller()
    assert poller.request() is None  # ignored (the original's quirk): nothing was taken
    assert poller.request() == accept_id
    assert wf.wait_for(str(accept_id), "calc-progress", ("not start",), 5) == "not start"


def test_cancel_from_either_side(env: MintEnv, tmp_path: Path) -> None:
    wf, api = env.wf(), Api(env.server, "mia")
    # Original interface cancels; the native API shows it cancelled; no poller gets it.
    first = wf.submit(env.commands["ok.sh"], {"in.txt": b"x"}, ["out.txt"])
    assert first is not None
    assert wf.first(wf.cancel(first))["code"] == 200
    assert api.get(str(calc_id_of(first)))["state"] == "cancelled"
    resp = wf.call("GET", "calc-status", params={"accept_id": first})
    assert resp.json()["errors"][0]["message"].startswith("status:cancelled:")
    poller = env.poller()
    poller.ignore_next = False
    assert poller.request() is None
    # Native cancel of a calc the original poller has taken: its next call is refused.
    second = wf.submit(env.commands["ok.sh"], {"in.txt": b"x"}, ["out.txt"])
    assert second is not None and poller.request() == second and poller.params(second)
    resp = api.call("POST", f"/api/v1/calcs/{calc_id_of(second)}/cancel")
    assert resp.json()["state"] == "cancelled"
    resp = poller.call("POST", "calc-start", json=poller.ids(second))
    assert resp.status_code == 409 and "cancelled" in poller.first(resp)["message"]
    assert wf.finish(second, tmp_path).exit_code == 1


def test_native_and_original_interfaces_share_calcs(env: MintEnv, tmp_path: Path) -> None:
    api = Api(env.server, "mia")
    # A native calc without args on the site: the original poller may run it.
    native = api.register(
        {"in.txt": b"native in"}, site=SITE, command=env.commands["ok.sh"], args=[]
    )
    assert api.put(native["id"], "in.txt", b"native in").status_code == 200
    # A native calc with args: never handed to an original poller (it runs a bare command).
    with_args = api.queued({"in.txt": b"y"}, site=SITE, command=env.commands["ok.sh"])
    poller = env.poller()
    poller.ignore_next = False
    assert poller.poll_once()
    assert poller.done == [accept_id_of(native["id"])]
    assert not poller.poll_once()
    done = api.get(native["id"])
    assert done["state"] == "succeeded" and done["lease"] is None
    # It asks for no named results (the native API has none): the two logs come back.
    assert {f["name"] for f in done["results"]} == {JP_STDOUT, JP_STDERR}
    out = api.call("GET", f"/api/v1/calcs/{native['id']}/results/{JP_STDOUT}")
    assert out.content.startswith(b"out from ")
    assert api.get(with_args["id"])["state"] == "queued"
    # The original workflow side sees native calcs by accept_id and can cancel them.
    wf = env.wf()
    aid = poller.done[0]
    assert wf.wait_for(aid, "calc-status", ("completed",), 5) == "completed"
    assert (
        wf.finish(aid, tmp_path).files[JP_STDERR]["content"] == base64.b64encode(b"warn\n").decode()
    )
    assert wf.first(wf.cancel(accept_id_of(with_args["id"])))["code"] == 200
    assert api.get(with_args["id"])["state"] == "cancelled"
    # A calc registered through the original interface is claimed by a native poller too.
    aid = wf.submit("sample", {"in.txt": b"z"}, ["out.txt"])
    calc, _lease = api.claimed(site=SITE)
    assert calc["id"] == calc_id_of(str(aid)) and calc["command"] == "sample"


def test_status_of_unknown_calcs_still_has_a_colon(env: MintEnv) -> None:
    wf = env.wf()
    for route in ("calc-status", "calc-progress"):
        for aid in ("01234567-89ab-4def-8123-456789abcdef", "not-an-id", ""):
            resp = wf.call("GET", route, params={"accept_id": aid})
            first = wf.first(resp)
            assert resp.status_code == 404 and first["code"] == 404
            assert first["message"].split(":")[1] == "unknown", first
    resp = wf.call("GET", "get-calc-result", params={"accept_id": "x"}, json={"accept_id": "x"})
    assert resp.status_code == 404 and ":" in wf.first(resp)["message"]
