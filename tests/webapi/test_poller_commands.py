"""A claim listing the poller's commands is handed only calcs of those commands, and a calc no live
poller runs says so (API and status queue page): real HTTPS server, real poller process."""

from __future__ import annotations

import html
import signal
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer
from tests.webapi.statushelp import Pages
from tests.webapi.test_e2e import wait_for
from tests.webapi.test_poller import start_poller, write_config
from webapi.client.client import Client
from webapi.contract.calc import MAX_POLLER_COMMANDS, ClaimRequest

NOT_LISTED = "command sleep is not on the list of any poller seen in the last 2 min"


def claim(api: Api, body: dict[str, Any]) -> requests.Response:
    return api.call("POST", "/api/v1/sites/site-a/claim", json={"wait": 0, **body})


def test_a_poller_is_handed_only_calcs_of_its_commands(api_server: RunningServer) -> None:
    api = Api(api_server)
    sleep = api.queued(command="sleep")
    assert claim(api, {"poller": "pa", "commands": ["sample"]}).status_code == 204
    waiting = api.get(sleep["id"])
    assert waiting["state"] == "queued"
    assert f"{NOT_LISTED} (pollers: pa)" in waiting["reason"]
    # A second live poller with another list: both are named, sorted.
    assert claim(api, {"poller": "pb", "commands": ["fail"]}).status_code == 204
    assert f"{NOT_LISTED} (pollers: pa, pb)" in api.get(sleep["id"])["reason"]
    page = Pages(api_server).login_as("admin").get("/status/queue")
    assert page.status_code == 200
    assert f"{NOT_LISTED} (pollers: pa, pb)" in html.unescape(page.text)
    # A calc of a listed command is handed over, the other one stays.
    sample = api.queued()
    got = claim(api, {"poller": "pa", "commands": ["sample"]})
    assert got.status_code == 200 and got.json()["calc"]["id"] == sample["id"]
    assert api.get(sleep["id"])["state"] == "queued"
    # A poller listing the command takes it; then the reason no longer blames the lists.
    got = claim(api, {"poller": "pc", "commands": ["sample", "sleep"]})
    assert got.status_code == 200 and got.json()["calc"]["id"] == sleep["id"]


def test_a_claim_without_commands_gets_any_calc(api_server: RunningServer) -> None:
    api = Api(api_server)
    sleep = api.queued(command="sleep")
    assert claim(api, {"poller": "pa", "commands": ["sample"]}).status_code == 204
    # An older poller (no list) is live: it may take the calc, so no "not on the list" reason.
    old = claim(api, {"poller": "old"})
    assert old.status_code == 200 and old.json()["calc"]["id"] == sleep["id"]
    other = api.queued(command="sleep")
    reason = api.get(other["id"])["reason"]
    assert "not on the list" not in reason and "waiting for a poller of site site-a" in reason
    # An empty list is a list: such a poller is handed nothing.
    assert claim(api, {"poller": "none", "commands": []}).status_code == 204
    assert api.get(other["id"])["state"] == "queued"


@pytest.mark.parametrize(
    ("commands", "says"),
    [
        ("sample", "'commands' must be a list of at most"),
        ({"sample": 1}, "'commands' must be a list of at most"),
        (["x"] * (MAX_POLLER_COMMANDS + 1), f"at most {MAX_POLLER_COMMANDS} command names"),
        (["ok", "bad name"], "'commands' has a bad command name 'bad name'"),
        (["-rf"], "'commands' has a bad command name '-rf'"),
        ([7], "'commands' has a bad command name 7"),
        (["a" * 300], "at most 255 characters"),
    ],
    ids=["string", "object", "too-many", "space", "dash-first", "number", "too-long"],
)
def test_bad_commands_are_a_clear_400(api_server: RunningServer, commands: Any, says: str) -> None:
    resp = claim(Api(api_server), {"poller": "pa", "commands": commands})
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"] == "bad_request" and says in body["message"]
    assert "\n" not in body["message"] and len(body["message"]) < 300


def test_the_real_poller_sends_its_commands(api_server: RunningServer, tmp_path: Path) -> None:
    """The poller process runs only `sample`: it never claims the `sleep` calc, which stays queued
    naming the poller, while a `sample` calc registered after it runs to the end."""
    counter = tmp_path / "runs.txt"
    config = write_config(api_server, tmp_path, poller_id="only-sample")
    log = tmp_path / "poller.log"
    poller = start_poller(config, log=log)
    api = Api(api_server)
    try:
        with Client(
            api_server.url, api_server.tokens["alice"], ca_file=api_server.ca_file
        ) as client:
            sleep = client.submit("site-a", "sleep", ["1"], [])
            sample = client.submit("site-a", "sample", [str(counter), "0"], [])
            final = client.wait(sample.id, timeout=30)
        assert final.state == "succeeded", log.read_text()
        wait_for(lambda: "(pollers: only-sample)" in api.get(sleep.id)["reason"], 15)
        assert api.get(sleep.id)["state"] == "queued"
        assert sleep.id not in log.read_text()
    finally:
        poller.send_signal(signal.SIGTERM)
        poller.wait(timeout=20)


def test_claim_request_round_trip_keeps_commands_or_their_absence() -> None:
    listed = ClaimRequest("p1", 5.0, confirm=True, commands=("sample", "/opt/mi/bin/run.sh"))
    assert ClaimRequest.from_json(listed.to_json(), "x") == listed
    unlisted = ClaimRequest("p1", 5.0)
    assert "commands" not in unlisted.to_json()
    assert ClaimRequest.from_json(unlisted.to_json(), "x").commands is None
    # Duplicates collapse, order kept.
    assert ClaimRequest.from_json({"commands": ["b", "a", "b"]}, "x").commands == ("b", "a")
