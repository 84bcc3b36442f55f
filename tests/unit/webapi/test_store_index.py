"""The store's indexes at scale: listings by state read only the markers' calcs, opening skips
final calcs the finals index vouches for, and no index is ever the truth a calc is found by
(deleted, damaged, stale). With other processes: tests/webapi/test_drill_store_index.py."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileEntry
from webapi.store import finals, repair, yaml_store
from webapi.store.base import NewCalcRequest
from webapi.store.yaml_store import YamlJobStore


def new_calc(store: YamlJobStore, user: str = "alice", site: str = "site-a") -> Calc:
    """A calc without inputs: queued at once."""
    req = NewCalcRequest(user=user, site=site, command="sample", args=(), inputs=())
    calc, _ = store.create(req, quota_bytes=0)
    return calc


def registered(store: YamlJobStore) -> Calc:
    req = NewCalcRequest(
        user="alice",
        site="site-a",
        command="sample",
        args=(),
        inputs=(FileEntry("in.dat", 3, "0" * 64),),
        request_id="req-1",
    )
    calc, _ = store.create(req, quota_bytes=0)
    return calc


def succeed(store: YamlJobStore, calc: Calc) -> Calc:
    got = store.claim(site=calc.site, user=calc.user, poller="p", wait=0)
    assert got is not None and got.id == calc.id and got.lease is not None
    return store.finish(
        calc.id, lease_id=got.lease.id, exit_code=0, reason=None, results=(), quota_bytes=0
    )


def populate(store: YamlJobStore) -> dict[CalcState, set[str]]:
    """Calcs in every kind of state: 5 succeeded, 1 cancelled, 2 queued, 1 running, 1 registered."""
    done = {succeed(store, new_calc(store)).id for _ in range(5)}
    cancelled = store.cancel(new_calc(store).id, "test").id
    running = new_calc(store, site="site-r")
    store.claim(site="site-r", user="alice", poller="p", wait=0)
    queued = {new_calc(store, user=u, site="site-q").id for u in ("alice", "bob")}
    return {
        CalcState.SUCCEEDED: done,
        CalcState.CANCELLED: {cancelled},
        CalcState.RUNNING: {running.id},
        CalcState.QUEUED: queued,
        CalcState.REGISTERED: {registered(store).id},
    }


def listed(store: YamlJobStore, state: CalcState, **kw: str) -> set[str]:
    user, site = kw.get("user"), kw.get("site")
    return {c.id for c in store.list_calcs(user=user, state=state, site=site)}


def assert_finds_all(store: YamlJobStore, truth: dict[CalcState, set[str]]) -> None:
    for state, ids in truth.items():
        assert listed(store, state) == ids, state
    everything = {c.id: c.state for c in store.list_calcs(user=None, state=None, site=None)}
    assert everything == {cid: state for state, ids in truth.items() for cid in ids}


def damage_index(data_dir: Path, damage: str) -> None:
    """Do to a closed store's finals index (or its marker dirs) what `damage` names."""
    index = data_dir / finals.FILE
    if damage == "deleted":
        index.unlink()
    elif damage == "garbage":  # cut off mid-write
        index.write_bytes(b'{"version": 2, "calcs": {"c-1": [')
    elif damage == "wrong version":
        index.write_text('{"version": 99, "calcs": {}}')
    elif damage == "version 1":  # written before entries carried site, state and end time
        doc = json.loads(index.read_bytes())
        doc["version"] = 1
        doc["calcs"] = {cid: row[:4] for cid, row in doc["calcs"].items()}
        index.write_text(json.dumps(doc))
    elif damage == "markers gone":
        for marker_dir in repair.INDEXES:
            shutil.rmtree(data_dir / marker_dir)
    else:
        raise ValueError(f"no such damage: {damage}")


def spy(
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    name: str,
    real: Callable[[Path], Any],
    key: Callable[[Path], Any] = lambda path: path,
) -> list[Any]:
    """Replace `owner.name` by `real` that also records key(path) of every call."""
    seen: list[Any] = []

    def recording(path: Path) -> Any:
        seen.append(key(path))
        return real(path)

    monkeypatch.setattr(owner, name, recording)
    return seen


def count_reads(monkeypatch: pytest.MonkeyPatch, module: object) -> list[str]:
    """Record the calc id of every calc.yaml read through `module.read_calc`."""
    return spy(monkeypatch, module, "read_calc", repair.read_calc, key=lambda p: p.parent.name)


def test_listing_a_non_final_state_reads_only_the_calcs_its_index_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    truth = populate(store)
    reads = count_reads(monkeypatch, yaml_store)
    assert listed(store, CalcState.QUEUED) == truth[CalcState.QUEUED]
    assert sorted(reads) == sorted(truth[CalcState.QUEUED])  # not the 6 final ones
    bob_q = {c for c in truth[CalcState.QUEUED] if store.get(c).user == "bob"}
    assert listed(store, CalcState.QUEUED, user="bob") == bob_q
    assert listed(store, CalcState.QUEUED, site="site-a") == set()
    assert listed(store, CalcState.RUNNING, site="site-r") == truth[CalcState.RUNNING]
    assert listed(store, CalcState.RUNNING, user="bob") == set()
    assert listed(store, CalcState.REGISTERED) == truth[CalcState.REGISTERED]
    # A calc that leaves a state leaves its listing (markers follow every save).
    store.cancel(next(iter(truth[CalcState.REGISTERED])), "gone")
    assert listed(store, CalcState.REGISTERED) == set()


def test_a_stale_marker_never_lists_a_calc_in_the_wrong_state(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    truth = populate(store)
    done = next(iter(truth[CalcState.SUCCEEDED]))
    (tmp_path / "running" / done).touch()
    (tmp_path / "registered" / done).touch()
    assert listed(store, CalcState.RUNNING) == truth[CalcState.RUNNING]
    assert listed(store, CalcState.REGISTERED) == truth[CalcState.REGISTERED]


def test_reopening_reads_only_records_written_since_the_finals_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    truth = populate(store)
    store.close()
    index = finals.load(tmp_path)
    assert set(index) == truth[CalcState.SUCCEEDED] | truth[CalcState.CANCELLED]
    reads = count_reads(monkeypatch, repair)
    again = YamlJobStore(tmp_path)
    non_final = {cid for s in (CalcState.QUEUED, CalcState.RUNNING) for cid in truth[s]}
    non_final |= truth[CalcState.REGISTERED]
    assert set(reads) == non_final
    assert_finds_all(again, truth)
    # The skipped calcs' registrations are still known: a retry gets the same calc.
    assert registered(again).id in truth[CalcState.REGISTERED]


@pytest.mark.parametrize("damage", ["deleted", "garbage", "wrong version", "markers gone"])
def test_a_lost_or_damaged_index_loses_no_calc(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = YamlJobStore(tmp_path)
    truth = populate(store)
    store.close()
    damage_index(tmp_path, damage)
    with caplog.at_level(logging.WARNING, logger="webapi.store.finals"):
        again = YamlJobStore(tmp_path)
    if damage in ("garbage", "wrong version"):
        assert "unreadable" in caplog.text and "every record is read" in caplog.text
    assert_finds_all(again, truth)
    queued = set()
    for user in ("alice", "bob"):
        got = again.claim(site="site-q", user=user, poller="p", wait=0)
        assert got is not None
        queued.add(got.id)
    assert queued == truth[CalcState.QUEUED]
    assert finals.load(tmp_path).keys() == truth[CalcState.SUCCEEDED] | truth[CalcState.CANCELLED]


def test_markers_deleted_under_a_running_store_fall_back_to_reading_every_record(
    tmp_path: Path,
) -> None:
    store = YamlJobStore(tmp_path)
    truth = populate(store)
    for marker_dir in ("queues", "running", "registered"):
        shutil.rmtree(tmp_path / marker_dir)
    assert_finds_all(store, truth)
