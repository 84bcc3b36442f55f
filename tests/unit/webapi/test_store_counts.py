"""Counts and purges from the finals index: the census (metrics, status page) and retention
take site, state and end time of the final calcs finals.json vouches for instead of parsing their
records, and are never wrong when the index is stale, damaged, old or gone; a calc's own path
(register, claim, heartbeat, finish) reads the same records however many calcs have ended.
With other processes and kill -9: tests/webapi/test_drill_store_counts.py."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.unit.webapi.test_store_index import (
    count_reads,
    damage_index,
    listed,
    new_calc,
    populate,
    spy,
    succeed,
)
from webapi.contract.calc import CalcState
from webapi.store import census, finals, yaml_store
from webapi.store.base import NewCalcRequest
from webapi.store.retention import RetentionRule
from webapi.store.yaml_store import YamlJobStore


def truth(store: YamlJobStore) -> Counter[tuple[str, str, str]]:
    """(site, state, user) counts from every record, parsed."""
    calcs = store.list_calcs(user=None, state=None, site=None)
    return Counter((c.site, str(c.state), c.user) for c in calcs)


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every record the census parses."""
    return spy(monkeypatch, census, "_site_state_user", census._site_state_user)


def test_the_first_census_after_a_restart_parses_only_calcs_that_are_not_final(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    expected = populate(store)
    store.close()
    again = YamlJobStore(tmp_path)
    parsed = count_parses(monkeypatch)
    got = again.census()
    non_final = {CalcState.QUEUED, CalcState.RUNNING, CalcState.REGISTERED}
    assert {p.parent.name for p in parsed} == {c for s in non_final for c in expected[s]}
    assert Counter(got.by_user) == truth(again)
    assert got.calcs == _by_site_state(got.by_user)
    # Calcs that end from now on join the owner's index as they are written: not parsed either.
    parsed.clear()
    done = succeed(again, new_calc(again, user="carol"))
    assert again.census().by_user[done.site, "succeeded", "carol"] == 1
    assert {p.parent.name for p in parsed} <= {done.id}


def _by_site_state(by_user: dict[tuple[str, str, str], int]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for (site, state, _user), n in by_user.items():
        out[site, state] += n
    return out


@pytest.mark.parametrize("damage", ["deleted", "garbage", "version 1", "stale entries"])
def test_counts_are_right_whatever_became_of_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    store = YamlJobStore(tmp_path)
    expected = populate(store)
    store.close()
    if damage != "stale entries":
        damage_index(tmp_path, damage)
    again = YamlJobStore(tmp_path)
    if damage == "stale entries":  # a second process rewrites final calcs the owner indexed
        beside = YamlJobStore(tmp_path, owner=False)
        for cid in list(again._finals)[:3]:
            beside.requeue(cid)
        beside.cancel(next(iter(expected[CalcState.QUEUED])), "by an admin")
    got = again.census()
    assert Counter(got.by_user) == truth(again)
    if damage != "stale entries":
        succeeded = sum(n for (_s, st, _u), n in got.by_user.items() if st == "succeeded")
        assert succeeded == len(expected[CalcState.SUCCEEDED])


def test_purge_judges_vouched_calcs_from_the_index_and_reads_only_those_it_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    done = [succeed(store, new_calc(store)) for _ in range(6)]
    queued = new_calc(store)
    store.close()
    store = YamlJobStore(tmp_path)
    reads = count_reads(monkeypatch, yaml_store)
    report = store.purge(lambda _site: RetentionRule(keep=2))
    oldest_first = sorted(done, key=lambda c: (c.updated, c.id))
    assert {p.id for p in report.calcs} == {c.id for c in oldest_first[:4]}
    assert report.kept_final == 2
    # Read: the non-final calc (judging), and each removed calc once more under the lock.
    assert sorted(reads) == sorted([queued.id, *(c.id for c in oldest_first[:4])])
    assert {c.id for c in store.list_calcs(user=None, state=None, site=None)} == {
        queued.id,
        *(c.id for c in oldest_first[4:]),
    }
    store.close()  # the owner's index forgets the removed calcs
    assert set(finals.load(tmp_path)) == {c.id for c in oldest_first[4:]}


def test_purge_never_trusts_an_entry_whose_record_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    done = [succeed(store, new_calc(store)) for _ in range(3)]
    # A second process requeues the newest: the owner's index still calls it final. Believed,
    # it would count as one of the two kept, and the oldest really final calc would go.
    YamlJobStore(tmp_path, owner=False).requeue(done[2].id)
    assert done[2].id in store.known_finals()
    reads = count_reads(monkeypatch, yaml_store)
    report = store.purge(lambda _site: RetentionRule(keep=2))
    assert report.calcs == () and report.kept_final == 2
    assert reads == [done[2].id]  # judged from its record, not from the index
    assert store.get(done[2].id).state is CalcState.QUEUED


def test_status_counts_match_the_records_for_admins_and_owners(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    populate(store)
    succeed(store, new_calc(store, user="bob", site="site-a"))
    store.close()
    again = YamlJobStore(tmp_path)
    by_user = again.census().by_user
    assert Counter(by_user) == truth(again)
    assert by_user["site-a", "succeeded", "bob"] == 1
    assert by_user["site-a", "succeeded", "alice"] == 5


def test_a_calcs_own_path_reads_the_same_records_however_many_calcs_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """register, claim, heartbeat, finish, get: the records read do not grow with history."""
    store = YamlJobStore(tmp_path)

    def one_calc() -> list[str]:
        reads = count_reads(monkeypatch, yaml_store)
        calc = new_calc(store)
        got = store.claim(site=calc.site, user=calc.user, poller="p", wait=0)
        assert got is not None and got.lease is not None
        store.heartbeat(calc.id, got.lease.id, "half way")
        store.finish(
            calc.id, lease_id=got.lease.id, exit_code=0, reason=None, results=(), quota_bytes=0
        )
        assert store.get(calc.id).state is CalcState.SUCCEEDED
        store.reap()
        monkeypatch.undo()
        return ["self" if r == calc.id else "other" for r in reads]

    early = one_calc()
    for _ in range(40):
        succeed(store, new_calc(store))
    store._last_reap = 0.0
    late = one_calc()
    assert late == early
    assert "other" not in late


def _register(store: YamlJobStore, request_id: str) -> tuple[str, bool]:
    req = NewCalcRequest(
        user="alice", site="site-a", command="sample", args=(), inputs=(), request_id=request_id
    )
    calc, created = store.create(req, quota_bytes=0)
    return calc.id, created


def test_a_restart_keeps_the_requests_index_right_without_rewriting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    ids = {}
    for n in range(4):
        cid, _ = _register(store, f"req-{n}")
        ids[f"req-{n}"] = succeed(store, store.get(cid)).id
    store.close()
    base = tmp_path / "requests" / "alice"
    entries = sorted(base.iterdir())
    assert len(entries) == 4
    # Damage: one entry wrong, one gone, one empty (torn), a leftover nobody expects.
    entries[0].write_text("c-" + "0" * 32)
    entries[1].unlink()
    entries[2].write_text("")
    (base / "left-over").write_text("c-" + "1" * 32)
    (tmp_path / "requests" / "mallory").write_text("not a dir")
    untouched = entries[3].stat().st_ino, entries[3].stat().st_mtime_ns
    again = YamlJobStore(tmp_path)
    assert sorted(p.name for p in base.iterdir()) == sorted(p.name for p in entries)
    assert not (tmp_path / "requests" / "mallory").exists()
    assert (entries[3].stat().st_ino, entries[3].stat().st_mtime_ns) == untouched
    for request_id, calc_id in ids.items():  # a retry gets its calc, never a second one
        assert _register(again, request_id) == (calc_id, False)


def test_listings_by_final_state_or_user_parse_only_what_can_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    expected = populate(store)
    bobs = succeed(store, new_calc(store, user="bob", site="site-b")).id
    store.close()
    again = YamlJobStore(tmp_path)
    open_states = (CalcState.QUEUED, CalcState.RUNNING, CalcState.REGISTERED)
    non_final = {cid for s in open_states for cid in expected[s]}
    reads = count_reads(monkeypatch, yaml_store)
    assert listed(again, CalcState.CANCELLED) == expected[CalcState.CANCELLED]
    assert set(reads) == expected[CalcState.CANCELLED] | non_final
    reads.clear()
    mine = {c.id for c in again.list_calcs(user="bob", state=None, site=None)}
    assert bobs in mine and set(reads) == {bobs}  # the non-final ones are cached by now
    # A second process makes one vouched calc cancelled: its entry still says succeeded.
    beside = YamlJobStore(tmp_path, owner=False)
    target = sorted(expected[CalcState.SUCCEEDED])[0]
    beside.requeue(target)
    beside.cancel(target, "by an admin")
    assert listed(again, CalcState.CANCELLED) == expected[CalcState.CANCELLED] | {target}
    assert listed(again, CalcState.SUCCEEDED) == (expected[CalcState.SUCCEEDED] | {bobs}) - {target}
    assert listed(again, CalcState.SUCCEEDED, site="site-b") == {bobs}


def test_the_listing_cache_does_not_keep_every_calc_ever_queued(tmp_path: Path) -> None:
    """Queued/running listings (the status page, a benchmark's wait) cache the calcs they
    parse; a calc that ends leaves that cache, so it holds what is open, not the history."""
    store = YamlJobStore(tmp_path)
    for _ in range(12):
        calc = new_calc(store)
        assert listed(store, CalcState.QUEUED) == {calc.id}
        succeed(store, calc)
        assert listed(store, CalcState.QUEUED) == set()
    assert len(store._listing) == 0
    everything = store.list_calcs(user=None, state=None, site=None)  # a full listing caches all
    assert len(everything) == len(store._listing) == 12
