"""Poller routes over real HTTPS: long-poll claim, leases, cancel, finish exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from tests.webapi.apihelp import Api, sha, snapshot
from tests.webapi.conftest import RunningServer


def finish_body(lease: str, out: bytes = b"out", code: int = 0) -> dict[str, Any]:
    return {
        "lease": lease,
        "exit_code": code,
        "results": [{"name": "out.txt", "size": len(out), "sha256": sha(out)}],
    }


def test_long_poll_answers_when_a_calc_is_queued(api_server: RunningServer) -> None:
    api = Api(api_server)
    calc = api.register()
    answers: list[Any] = []
    waiter = threading.Thread(target=lambda: answers.append(api.claim(wait=5)))
    waiter.start()
    time.sleep(0.3)
    api.put(calc["id"], "in.txt", b"hello")
    waiter.join(timeout=20)
    assert answers[0].status_code == 200 and answers[0].json()["calc"]["id"] == calc["id"]
    assert answers[0].json()["lease"]["heartbeat"] == 1


def test_claim_times_out_with_204_and_sees_only_own_calcs(api_server: RunningServer) -> None:
    Api(api_server, "bob").queued()
    api = Api(api_server)
    assert api.claim(wait=0.3).status_code == 204
    assert api.claim(site="nowhere").json()["error"] == "unknown_site"
    assert (
        api.call("POST", "/api/v1/sites/site-a/claim", json={"poller": "../x"}).status_code == 400
    )


def test_queued_reason_and_sites(api_server: RunningServer) -> None:
    api = Api(api_server)
    calc = api.queued()
    assert "no poller has been seen for site site-a" in api.get(calc["id"])["reason"]
    Api(api_server, "bob").claim(wait=0)
    assert "waiting for a poller of site site-a" in api.get(calc["id"])["reason"]
    sites = Api(api_server, "admin").call("GET", "/api/v1/sites").json()["sites"]
    assert sites[0]["name"] == "site-a" and sites[0]["poller_last_seen"]["poller"] == "p1"
    assert sites[1]["poller_last_seen"] is None


def test_heartbeat_and_cancel_delivery(api_server: RunningServer) -> None:
    api = Api(api_server)
    api.queued()
    calc, lease = api.claimed()
    beat = api.call(
        "POST", f"/api/v1/calcs/{calc['id']}/heartbeat", json={"lease": lease, "progress": "50%"}
    )
    assert beat.json()["cancel"] is False
    assert api.get(calc["id"])["progress"] == "50%"
    wrong = api.call("POST", f"/api/v1/calcs/{calc['id']}/heartbeat", json={"lease": "l-other"})
    assert wrong.status_code == 409
    assert (
        Api(api_server, "bob")
        .call("POST", f"/api/v1/calcs/{calc['id']}/heartbeat", json={"lease": lease})
        .status_code
        == 403
    )
    api.call("POST", f"/api/v1/calcs/{calc['id']}/cancel")
    beat = api.call("POST", f"/api/v1/calcs/{calc['id']}/heartbeat", json={"lease": lease})
    assert beat.status_code == 200 and beat.json()["cancel"] is True
    assert (
        api.call("POST", f"/api/v1/calcs/{calc['id']}/finish", json=finish_body(lease)).status_code
        == 409
    )


def test_finish_exactly_once_and_results(api_server: RunningServer) -> None:
    api = Api(api_server)
    api.queued()
    calc, lease = api.claimed()
    path = f"/api/v1/calcs/{calc['id']}/finish"
    assert api.call("POST", path, json=finish_body(lease, code=2)).status_code == 200
    before = snapshot(api_server.data_dir)
    assert api.call("POST", path, json=finish_body(lease, code=2)).status_code == 200
    assert api.call("POST", path, json=finish_body(lease, b"other", code=2)).status_code == 409
    assert api.call("POST", path, json={"lease": lease, "exit_code": "x"}).status_code == 400
    assert api.put(calc["id"], "out.txt", b"bad", kind="results").status_code == 422
    assert snapshot(api_server.data_dir) == before
    assert api.put(calc["id"], "out.txt", b"out", kind="results", lease="l-nope").status_code == 409
    assert api.put(calc["id"], "out.txt", b"out", kind="results").status_code == 200
    done = api.get(calc["id"])
    assert done["state"] == "failed" and done["exit_code"] == 2 and "code 2" in done["reason"]
    # Replays after the end: same manifest is still fine, results are closed.
    assert api.put(calc["id"], "out.txt", b"out", kind="results").status_code == 409


def test_result_for_calc_not_running(api_server: RunningServer) -> None:
    api = Api(api_server)
    calc = api.queued()
    resp = api.call("POST", f"/api/v1/calcs/{calc['id']}/finish", json=finish_body("l-x"))
    assert resp.status_code == 409
    assert api.put(calc["id"], "out.txt", b"out", kind="results").status_code == 404


@pytest.mark.slow
def test_expired_lease_requeues_then_fails(make_api_server: Any) -> None:
    server = make_api_server(lease_seconds=1, max_attempts=2)
    api = Api(server)
    calc = api.queued()
    _, lease = api.claimed()
    time.sleep(1.6)  # the reaper runs every 0.5 s
    back = api.get(calc["id"])
    assert (
        back["state"] == "queued"
        and back["attempts"] == 1
        and "stopped heartbeating" in back["reason"]
    )
    resp = api.call("POST", f"/api/v1/calcs/{calc['id']}/heartbeat", json={"lease": lease})
    assert resp.status_code == 409
    api.claimed()
    time.sleep(1.6)
    failed = api.get(calc["id"])
    assert failed["state"] == "failed" and "lease lost 2 times" in failed["reason"]
    assert (
        Api(server, "admin")
        .call("POST", f"/api/v1/admin/calcs/{calc['id']}/requeue")
        .json()["state"]
        == "queued"
    )
    assert api.call("POST", f"/api/v1/admin/calcs/{calc['id']}/requeue").status_code == 403


@pytest.mark.slow
def test_many_long_polls_claim_each_calc_once(make_api_server: Any) -> None:
    server = make_api_server(threads=64, lease_seconds=120)  # no requeue during the test
    api = Api(server)
    claimed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def poller(n: int) -> None:
        me = Api(server)
        while not stop.is_set():
            resp = me.claim(wait=2, poller=f"p{n}")
            if resp.status_code == 200:
                with lock:
                    claimed.append(resp.json()["calc"]["id"])

    threads = [threading.Thread(target=poller, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    ids = [api.queued()["id"] for _ in range(50)]
    deadline = time.monotonic() + 60
    while len(claimed) < 50 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert Counter(claimed) == Counter(ids)


def test_no_secret_in_the_log(api_server: RunningServer) -> None:
    anon = Api(api_server, None)
    for user, pw in api_server.passwords.items():
        token = anon.call("POST", "/api/v1/login", json={"user": user, "password": pw}).json()[
            "token"
        ]
        anon.call("GET", "/api/v1/calcs", headers={"Authorization": f"Bearer {token}"})
        anon.call("POST", "/api/v1/login", json={"user": user, "password": pw + "x"})
        log = api_server.log_path.read_text()
        assert token not in log and pw not in log
    for user in api_server.tokens:
        Api(api_server, user).call("GET", "/api/v1/calcs")
    log = api_server.log_path.read_text()
    assert "GET /api/v1/calcs 200" in log
    for secret in [*api_server.tokens.values(), *api_server.passwords.values()]:
        assert secret not in log
