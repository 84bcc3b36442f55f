"""The wire contract: every shape survives a round trip, and bad ones are refused with a reason
(BadRequest for requests, MalformedAnswer for a server's answers)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from webapi import calcs
from webapi.calcs import Lease
from webapi.contract.calc import (
    CalcState,
    CalcView,
    ClaimGrant,
    ClaimRequest,
    FileAck,
    FileEntry,
    FinishReport,
    Heartbeat,
    HeartbeatReply,
    LeaseGrant,
    Registration,
)
from webapi.errors import BadRequest, MalformedAnswer

SHA = "ab" * 32
CALC_ID = "c-" + "0" * 32


def running_calc() -> calcs.Calc:
    calc = calcs.new_calc(
        calc_id=CALC_ID,
        user="alice",
        site="site-a",
        command="sample",
        args=("--n", "3"),
        inputs=(FileEntry("dir/in.txt", 5, SHA),),
        timeout=60,
        request_id="r1",
        now=100.5,
    )
    calc = calcs.record_input(calc, "dir/in.txt", 5, 101.0)
    return calcs.claim(calc, lease_id="l-" + "1" * 24, poller="p1", expires=900.25, now=102.0)


def test_calc_view_round_trip_hides_the_lease_id() -> None:
    calc = running_calc()
    doc = calc.view().to_json()
    assert doc["lease"] == {"poller": "p1", "expires": "1970-01-01T00:15:00.250000Z"}
    assert "l-" not in str(doc)
    view = CalcView.from_json(doc)
    assert view == calc.view() and view.state is CalcState.RUNNING and not view.done
    assert view.inputs == (FileEntry("dir/in.txt", 5, SHA, 5),)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"id": "x"}, "c-<32 hex digits>"),
        ({"state": "weird"}, "unknown state"),
        ({"args": "a b"}, "'args' must be a list"),
        ({"created": "yesterday"}, "RFC 3339"),
        ({"inputs": [{"name": "../x", "size": 1, "sha256": SHA}]}, "'..'"),
        ({"inputs": [{"name": "x", "size": 1, "sha256": SHA, "received": 2}]}, "'received'"),
        ({"exit_code": "0"}, "'exit_code'"),
    ],
)
def test_malformed_calc_answers_are_refused(change: dict[str, Any], why: str) -> None:
    doc = {**running_calc().view().to_json(), **change}
    with pytest.raises(MalformedAnswer, match=why):
        CalcView.from_json(doc)


def test_registration_round_trip() -> None:
    reg = Registration("site-a", "sample", ("x",), (FileEntry("a/b", 3, SHA),), 10, "req")
    assert Registration.from_json(reg.to_json()) == reg
    assert "received" not in str(reg.to_json())


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"site": "s", "command": "c", "bogus": 1}, "unknown keys"),
        ({"command": "c"}, "'site'"),
        ({"site": "s", "command": ""}, "'command'"),
        ({"site": "s", "command": "c", "args": ["a\x00b"]}, "without NUL"),
        ({"site": "s", "command": "c", "args": ["x"] * 1001}, "at most 1000"),
        ({"site": "s", "command": "c", "timeout": 0}, "'timeout'"),
        ({"site": "s", "command": "c", "timeout": True}, "'timeout'"),
        ({"site": "s", "command": "c", "request_id": ""}, "'request_id'"),
        (
            {"site": "s", "command": "c", "inputs": [{"name": "a", "size": -1, "sha256": SHA}]},
            "'size'",
        ),
        (
            {"site": "s", "command": "c", "inputs": [{"name": "a", "size": 1, "sha256": "x"}]},
            "'sha256'",
        ),
        (
            {
                "site": "s",
                "command": "c",
                "inputs": [
                    {"name": "a", "size": 1, "sha256": SHA},
                    {"name": "a/b", "size": 1, "sha256": SHA},
                ],
            },
            "clashes",
        ),
    ],
)
def test_bad_registrations(body: dict[str, Any], why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        Registration.from_json(body)


@pytest.mark.parametrize("wait", [-1, math.nan, math.inf, True, "5"])
def test_claim_wait_must_be_a_finite_number(wait: Any) -> None:
    with pytest.raises(BadRequest, match="'wait'"):
        ClaimRequest.from_json({"wait": wait}, default_poller="p")


def test_claim_request_defaults_and_poller_ids() -> None:
    assert ClaimRequest.from_json({}, default_poller="alice") == ClaimRequest("alice", 50.0)
    with pytest.raises(BadRequest, match="'poller'"):
        ClaimRequest.from_json({"poller": "bad id"}, default_poller="alice")


def test_claim_grant_round_trip_and_bad_leases() -> None:
    calc = running_calc()
    grant = ClaimGrant(calc.view(), LeaseGrant("l-" + "2" * 24, 900.25, 30))
    assert ClaimGrant.from_json(grant.to_json()) == grant
    for lease in (
        {"id": "l-x", "expires": "1970-01-01T00:00:00Z"},
        {"id": "l-" + "2" * 24, "expires": "1970-01-01T00:00:00Z", "heartbeat": 0},
    ):
        with pytest.raises(MalformedAnswer):
            ClaimGrant.from_json({"calc": calc.view().to_json(), "lease": lease})
    with pytest.raises(MalformedAnswer, match="JSON object"):
        ClaimGrant.from_json([])


def test_poller_messages_round_trip() -> None:
    beat = Heartbeat("l-1", "half way")
    assert Heartbeat.from_json(beat.to_json()) == beat
    assert HeartbeatReply.from_json(HeartbeatReply(True, 5.0).to_json()) == HeartbeatReply(
        True, 5.0
    )
    report = FinishReport("l-1", 3, (FileEntry("out", 1, SHA),), "it failed")
    assert FinishReport.from_json(report.to_json()) == report
    assert FileAck.from_json(FileAck("out", 1, True).to_json()) == FileAck("out", 1, True)
    with pytest.raises(BadRequest, match="'lease'"):
        FinishReport.from_json({"exit_code": 0})
    with pytest.raises(BadRequest, match="'progress'"):
        Heartbeat.from_json({"lease": "l", "progress": "x" * 1001})


def test_server_record_keeps_what_the_view_hides() -> None:
    calc = running_calc()
    assert calcs.Calc.from_record(calc.to_record()) == calc
    assert replace(calc, lease=Lease("l-9", "p", 1.0)).view().lease is not None
