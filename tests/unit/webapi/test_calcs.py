"""The calc state machine: every allowed move, and Conflict for the others."""

from __future__ import annotations

import pytest

from webapi import calcs
from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileEntry, parse_manifest
from webapi.errors import BadRequest, Conflict

SHA = "a" * 64


def make(inputs: tuple[FileEntry, ...] = (FileEntry("in.txt", 5, SHA),)) -> Calc:
    return calcs.new_calc(
        calc_id="c-" + "0" * 32,
        user="alice",
        site="site-a",
        command="sample",
        args=("x",),
        inputs=inputs,
        timeout=None,
        request_id=None,
        now=100.0,
    )


def running() -> Calc:
    calc = calcs.record_input(make(), "in.txt", 5, 101.0)
    return calcs.claim(calc, lease_id="L", poller="p", expires=200.0, now=102.0)


def test_inputs_complete_queue_the_calc() -> None:
    calc = make()
    assert calc.state is CalcState.REGISTERED
    calc = calcs.record_input(calc, "in.txt", 3, 101.0)
    assert calc.state is CalcState.REGISTERED
    calc = calcs.record_input(calc, "in.txt", 5, 102.0)
    assert calc.state is CalcState.QUEUED and calc.queued_at == 102.0


def test_no_inputs_or_empty_inputs_queue_at_once() -> None:
    assert make(()).state is CalcState.QUEUED
    assert make((FileEntry("empty", 0, SHA),)).state is CalcState.QUEUED


def test_claim_only_from_queued() -> None:
    with pytest.raises(Conflict, match="registered"):
        calcs.claim(make(), lease_id="L", poller="p", expires=1.0, now=1.0)
    calc = running()
    assert calc.state is CalcState.RUNNING and calc.lease is not None
    with pytest.raises(Conflict):
        calcs.claim(calc, lease_id="M", poller="q", expires=1.0, now=1.0)


def test_heartbeat_needs_the_lease() -> None:
    calc = running()
    calc = calcs.heartbeat(calc, lease_id="L", expires=300.0, progress="half", now=103.0)
    assert calc.lease is not None and calc.lease.expires == 300.0 and calc.progress == "half"
    with pytest.raises(Conflict, match="no longer held"):
        calcs.heartbeat(calc, lease_id="other", expires=1.0, progress=None, now=1.0)


def test_finish_then_results_complete_the_calc() -> None:
    calc = calcs.finish(
        running(),
        lease_id="L",
        exit_code=0,
        reason=None,
        results=(FileEntry("out", 4, SHA),),
        now=110.0,
    )
    assert calc.state is CalcState.RUNNING and calc.results_declared
    calc = calcs.record_result(calc, lease_id="L", name="out", received=4, now=111.0)
    assert calc.state is CalcState.SUCCEEDED and calc.lease is None


def test_finish_nonzero_without_results_fails_with_reason() -> None:
    calc = calcs.finish(running(), lease_id="L", exit_code=3, reason=None, results=(), now=1.0)
    assert calc.state is CalcState.FAILED and "code 3" in (calc.reason or "")
    calc = calcs.finish(running(), lease_id="L", exit_code=9, reason="refused", results=(), now=1.0)
    assert calc.reason == "refused"


def test_finish_is_exactly_once() -> None:
    results = (FileEntry("out", 4, SHA),)
    calc = calcs.finish(running(), lease_id="L", exit_code=0, reason=None, results=results, now=1.0)
    same = calcs.finish(calc, lease_id="L", exit_code=0, reason=None, results=results, now=2.0)
    assert same is calc
    with pytest.raises(Conflict, match="different"):
        calcs.finish(calc, lease_id="L", exit_code=1, reason=None, results=results, now=2.0)
    with pytest.raises(Conflict, match="different"):
        calcs.finish(calc, lease_id="L", exit_code=0, reason=None, results=(), now=2.0)


def test_result_upload_needs_finish_and_running() -> None:
    with pytest.raises(Conflict, match="finish"):
        calcs.record_result(running(), lease_id="L", name="out", received=1, now=1.0)
    with pytest.raises(Conflict):
        calcs.record_result(make(), lease_id="L", name="out", received=1, now=1.0)


def test_cancel_from_each_state() -> None:
    for calc in (make(), calcs.record_input(make(), "in.txt", 5, 1.0), running()):
        cancelled = calcs.cancel(calc, reason="by alice", now=5.0)
        assert cancelled.state is CalcState.CANCELLED
        assert calcs.cancel(cancelled, reason="again", now=6.0) is cancelled
    done = calcs.finish(running(), lease_id="L", exit_code=0, reason=None, results=(), now=1.0)
    with pytest.raises(Conflict, match="succeeded"):
        calcs.cancel(done, reason="late", now=2.0)


def test_running_cancel_keeps_lease_for_the_heartbeat_answer() -> None:
    calc = calcs.cancel(running(), reason="x", now=5.0)
    assert calcs.heartbeat(calc, lease_id="L", expires=9.0, progress=None, now=6.0) is calc
    with pytest.raises(Conflict, match="cancelled"):
        calcs.finish(calc, lease_id="L", exit_code=0, reason=None, results=(), now=7.0)


def test_lease_expiry_requeues_then_fails() -> None:
    calc = running()
    assert calcs.lease_expired(calc, 200.0) and not calcs.lease_expired(calc, 199.0)
    calc = calcs.expire_lease(calc, max_attempts=2, now=201.0)
    assert (
        calc.state is CalcState.QUEUED and calc.attempts == 1 and "requeued" in (calc.reason or "")
    )
    calc = calcs.claim(calc, lease_id="M", poller="q", expires=300.0, now=202.0)
    calc = calcs.expire_lease(calc, max_attempts=2, now=301.0)
    assert calc.state is CalcState.FAILED and "lease lost 2 times" in (calc.reason or "")


def test_queued_expiry_and_requeue() -> None:
    calc = calcs.record_input(make(), "in.txt", 5, 1.0)
    failed = calcs.expire_queued(calc, now=99.0, waited=98.0)
    assert failed.state is CalcState.FAILED and "expired in the queue" in (failed.reason or "")
    again = calcs.requeue(failed, now=100.0)
    assert again.state is CalcState.QUEUED
    with pytest.raises(Conflict):
        calcs.requeue(make(), now=1.0)
    with pytest.raises(Conflict):
        calcs.expire_queued(make(), now=1.0, waited=1.0)


def test_record_round_trip() -> None:
    calc = calcs.heartbeat(running(), lease_id="L", expires=5.0, progress="p", now=1.0)
    assert Calc.from_record(calc.to_record()) == calc
    doc = calc.view().to_json()
    assert doc["state"] == "running" and "id" not in doc["lease"]  # the lease id stays secret


@pytest.mark.parametrize(
    "raw",
    [
        "x",
        [{"name": "../x", "size": 1, "sha256": SHA}],
        [{"name": "a", "size": -1, "sha256": SHA}],
        [{"name": "a", "size": 1, "sha256": "ABC"}],
        [{"name": "a", "size": 1, "sha256": SHA}, {"name": "a/b", "size": 1, "sha256": SHA}],
        [{"name": "a", "size": 1, "sha256": SHA, "extra": 1}],
    ],
)
def test_bad_manifests(raw: object) -> None:
    with pytest.raises(BadRequest):
        parse_manifest(raw, "inputs")
