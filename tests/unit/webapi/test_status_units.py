"""Status page pieces without a server: session expiry and CSRF compare, calc state history."""

from __future__ import annotations

import shutil
from pathlib import Path

from webapi import calcs
from webapi.calcs import Calc, StateChange
from webapi.contract.calc import CalcState, FileEntry
from webapi.server.status.sessions import SessionStore, csrf_ok
from webapi.server.status.views import actions_for, ago
from webapi.store.base import NewCalcRequest
from webapi.store.yaml_store import YamlJobStore

SHA = "a" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_when_idle_and_at_their_maximum_age() -> None:
    clock = Clock()
    store = SessionStore(idle_seconds=60, max_age_seconds=300, clock=clock)
    sid, session = store.create("alice", admin=False)
    assert store.get(sid) == session
    clock.now += 59
    assert store.get(sid) is not None  # used: the idle time starts again
    clock.now += 59
    assert store.get(sid) is not None
    clock.now += 60
    assert store.get(sid) is None  # idle too long
    sid, _ = store.create("alice", admin=False)
    for _ in range(6):
        clock.now += 50
        store.get(sid)
    assert store.get(sid) is None  # 300 s after login, used or not
    assert store.get(None) is None and store.get("") is None and store.get("forged") is None


def test_each_session_has_its_own_csrf_token_and_logout_ends_it() -> None:
    store = SessionStore()
    sid_a, a = store.create("alice", admin=False)
    _sid_b, b = store.create("admin", admin=True)
    assert a.csrf != b.csrf and len(a.csrf) >= 40 and sid_a != a.csrf
    assert csrf_ok(a, a.csrf)
    assert not csrf_ok(a, b.csrf) and not csrf_ok(a, None) and not csrf_ok(a, "")
    assert not csrf_ok(a, a.csrf[:-1]) and not csrf_ok(a, a.csrf + "x")
    assert not csrf_ok(a, "\udcff")  # not even encodable: refused, not an exception
    store.end(sid_a)
    assert store.get(sid_a) is None


def _new(inputs: tuple[FileEntry, ...]) -> Calc:
    return calcs.new_calc(
        calc_id="c-" + "0" * 32,
        user="alice",
        site="site-a",
        command="sample",
        args=(),
        inputs=inputs,
        timeout=None,
        request_id=None,
        now=100.0,
    )


def test_history_records_each_state_entered_with_time_reason_and_poller() -> None:
    first = calcs.with_history(None, _new((FileEntry("in.txt", 5, SHA),)))
    assert first.history == (StateChange("registered", 100.0),)
    queued = calcs.with_history(first, calcs.record_input(first, "in.txt", 5, 101.0))
    beat = queued
    running = calcs.with_history(
        queued, calcs.claim(queued, lease_id="l-1", poller="p1", expires=200.0, now=102.0)
    )
    again = calcs.with_history(
        running,
        calcs.heartbeat(running, lease_id="l-1", expires=300.0, progress="50%", now=103.0),
    )
    lost = calcs.with_history(again, calcs.expire_lease(again, max_attempts=3, now=400.0))
    assert [h.state for h in lost.history] == ["registered", "queued", "running", "queued"]
    assert lost.history[2] == StateChange("running", 102.0, None, "p1")
    assert lost.history[3].reason and "stopped heartbeating" in lost.history[3].reason
    assert again.history == running.history  # a heartbeat is not a step
    assert beat.history[-1].at == 101.0
    assert Calc.from_record(lost.to_record()) == lost


def test_history_of_a_calc_without_inputs_and_of_an_admin_requeue() -> None:
    calc = calcs.with_history(None, _new(()))
    assert [h.state for h in calc.history] == ["registered", "queued"]
    requeued = calcs.with_history(calc, calcs.requeue(calc, now=150.0))
    assert [h.state for h in requeued.history][-1] == "queued" and len(requeued.history) == 3
    assert requeued.history[-1].reason == "requeued by an admin"
    for _ in range(calcs.HISTORY_MAX + 5):
        requeued = calcs.with_history(
            requeued, calcs.requeue(requeued, now=(requeued.queued_at or 0) + 1)
        )
    assert len(requeued.history) == calcs.HISTORY_MAX


def test_actions_follow_the_state_machine_and_ages_read_well() -> None:
    calc = _new(())
    assert actions_for(calc) == ("cancel", "fail", "requeue")
    assert actions_for(calcs.cancel(calc, reason="x", now=1.0)) == ("requeue",)
    assert actions_for(_new((FileEntry("in", 5, SHA),))) == ("cancel", "fail")
    assert [ago(s) for s in (-3, 42, 420, 36000)] == ["0 s", "42 s", "7 min", "10.0 h"]
    assert CalcState.QUEUED.value == "queued"


def test_listings_parse_a_record_again_only_when_it_changed(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    req = NewCalcRequest("alice", "site-a", "sample", (), ())
    one, _ = store.create(req, quota_bytes=0)
    two, _ = store.create(req, quota_bytes=0)
    first = {c.id: c for c in store.list_calcs(user=None, state=None, site=None)}
    again = {c.id: c for c in store.list_calcs(user=None, state=None, site=None)}
    assert all(again[k] is first[k] for k in first)  # served from the cache
    store.cancel(one.id, "no longer needed")
    listed = {c.id: c for c in store.list_calcs(user=None, state=None, site=None)}
    assert listed[one.id].state is CalcState.CANCELLED and listed[two.id] is first[two.id]
    assert listed[one.id] == store.get(one.id)
    shutil.rmtree(tmp_path / "calcs" / two.id)
    assert [c.id for c in store.list_calcs(user=None, state=None, site=None)] == [one.id]
    store.close()
