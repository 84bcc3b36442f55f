"""kill -9 the server (a real subprocess) with calcs in every state and mid-upload; restart."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.webapi.apihelp import Api, raw_partial_put, sha


@pytest.mark.slow
def test_kill_and_restart_keeps_every_calc(make_api_server: Any) -> None:
    server = make_api_server(subprocess=True, lease_seconds=60)
    api = Api(server)
    registered = api.register()
    big = os.urandom(2_000_000)
    uploading = api.register({"big.bin": big})
    api.put(uploading["id"], "big.bin", big[:500_000])
    queued = api.queued()
    running_calc = api.queued()
    cancelled = api.register()
    api.call("POST", f"/api/v1/calcs/{cancelled['id']}/cancel")
    done = api.queued()
    # Claim order is queue order: queued, running_calc, done — claim all three, then hand
    # `queued` back by requeue so each state is present at the kill.
    claims = {c["id"]: lease for c, lease in (api.claimed(), api.claimed(), api.claimed())}
    out = b"result"
    manifest = {
        "lease": claims[done["id"]],
        "exit_code": 0,
        "results": [{"name": "r.txt", "size": len(out), "sha256": sha(out)}],
    }
    api.call("POST", f"/api/v1/calcs/{done['id']}/finish", json=manifest)
    api.put(done["id"], "r.txt", out, kind="results")
    Api(server, "admin").call("POST", f"/api/v1/admin/calcs/{queued['id']}/requeue")
    # Mid-upload: half a body in flight when the server dies.
    raw_partial_put(
        server,
        f"/api/v1/calcs/{uploading['id']}/inputs/big.bin?offset=500000",
        1_500_000,
        big[500_000:900_000],
    )
    server.kill()

    again = make_api_server(subprocess=True, base_dir=server.base_dir, lease_seconds=60)
    api = Api(again)
    states = {
        c["id"]: c["state"]
        for c in Api(again, "admin").call("GET", "/api/v1/calcs").json()["calcs"]
    }
    assert states == {
        registered["id"]: "registered",
        uploading["id"]: "registered",
        queued["id"]: "queued",
        running_calc["id"]: "running",
        cancelled["id"]: "cancelled",
        done["id"]: "succeeded",
    }
    received = api.get(uploading["id"])["inputs"][0]["received"]
    assert 500_000 <= received <= 900_000
    assert api.put(uploading["id"], "big.bin", big[received:], offset=received).json()["complete"]
    assert api.call("GET", f"/api/v1/calcs/{uploading['id']}/inputs/big.bin").content == big
    # The index was rebuilt: the queued calcs are claimable in order, the running one is not.
    assert api.claimed()[0]["id"] == queued["id"]
    assert api.claimed()[0]["id"] == uploading["id"]
    assert api.claim(wait=0).status_code == 204
    # The running calc's poller carries on with its lease after the restart.
    lease = claims[running_calc["id"]]
    beat = api.call("POST", f"/api/v1/calcs/{running_calc['id']}/heartbeat", json={"lease": lease})
    assert beat.status_code == 200 and beat.json()["cancel"] is False
    assert api.call("GET", f"/api/v1/calcs/{done['id']}/results/r.txt").content == out
    assert not list(again.data_dir.rglob("~tmp-*"))
    again.stop()
