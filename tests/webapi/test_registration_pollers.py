"""A calc that no poller could ever take is refused at registration, through either API: its
site has been served, but only by pollers of other users (a poller takes its own user's calcs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.webapi.apihelp import Api, snapshot
from tests.webapi.conftest import RunningServer
from tests.webapi.mintfix import SITE, MintEnv, make_env


@pytest.fixture
def env(make_api_server: Callable[..., RunningServer], tmp_path: Path) -> MintEnv:
    return make_env(make_api_server, tmp_path)


def _native(env: MintEnv, user: str, **extra: Any) -> Any:
    body = {"site": SITE, "command": env.commands["ok.sh"], "args": [], "inputs": [], **extra}
    return Api(env.server, user).call("POST", "/api/v1/calcs", json=body)


def _refused(first: dict[str, Any], user: str, others: tuple[str, ...], site: str = SITE) -> None:
    message = first["message"]
    assert first["error"] == "no_poller_for_user", first
    assert f"site '{site}' is served only by pollers of other users" in message
    assert f"run one with a token of {user}" in message
    assert not any(other in message for other in others), "other users' names are not told"


def test_site_served_only_by_other_users_pollers(env: MintEnv) -> None:
    wf = env.wf("mia")
    # No poller seen yet for the site: accepted, one may come later.
    assert wf.submit(env.commands["ok.sh"], {"in.txt": b"x"}, ["out.txt"]) is not None
    assert _native(env, "mia").status_code == 201
    # Then only ben's (original) poller asks for work there.
    ben = env.poller("ben")
    ben.ignore_next = False
    assert ben.request() is None
    before = snapshot(env.server.data_dir)
    doc = {"calc-info": wf.calc_info(env.commands["ok.sh"], {"in.txt": b"x"}, ["out.txt"], "")}
    resp = wf.call("POST", "add-calcinfo", json=doc)
    first = wf.first(resp)
    assert (resp.status_code, first["code"]) == (409, 409), first
    assert first["message"].startswith("add-calcinfo: ")
    _refused(first, "mia", ("ben",))
    resp = _native(env, "mia")
    assert resp.status_code == 409
    _refused(resp.json(), "mia", ("ben",))
    assert snapshot(env.server.data_dir) == before
    # Ben, whose poller serves the site, registers as before; another site is not concerned.
    assert env.wf("ben").submit(env.commands["ok.sh"], {"in.txt": b"x"}, ["out.txt"]) is not None
    assert env.wf("mia", site="site-a").submit("sample", {}, []) is not None
    # Once a poller of mia's has been seen there, mia's calcs are taken again.
    mia = env.poller("mia")
    mia.ignore_next = False
    assert mia.request() is not None
    assert wf.submit(env.commands["ok.sh"], {"in.txt": b"x"}, ["out.txt"]) is not None
    assert _native(env, "mia").status_code == 201


def test_native_pollers_count_too(api_server: RunningServer) -> None:
    alice, bob = Api(api_server, "alice"), Api(api_server, "bob")
    body = {"site": "site-a", "command": "sample", "args": [], "inputs": []}
    first = alice.call("POST", "/api/v1/calcs", json={**body, "request_id": "r-1"})
    assert first.status_code == 201
    assert bob.claim(site="site-a", wait=0).status_code == 204  # bob's poller was here
    before = snapshot(api_server.data_dir)
    resp = alice.call("POST", "/api/v1/calcs", json=body)
    assert resp.status_code == 409
    _refused(resp.json(), "alice", ("bob",), site="site-a")
    assert snapshot(api_server.data_dir) == before
    # A retry of a registration that was accepted is answered as before (idempotency wins).
    again = alice.call("POST", "/api/v1/calcs", json={**body, "request_id": "r-1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # Bob's own calcs, and alice's on a site bob does not serve, are taken.
    assert bob.call("POST", "/api/v1/calcs", json=body).status_code == 201
    assert alice.call("POST", "/api/v1/calcs", json={**body, "site": "site-b"}).status_code == 201
