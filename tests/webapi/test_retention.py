"""Retention: final calcs past their site's age or count limit are removed with their files, by
the server's own loop and by `extcomp-api admin purge [--dry-run]`; nothing else ever is."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.webapi.apihelp import Api, sha
from tests.webapi.conftest import RunningServer
from webapi.contract.calc import FINAL_STATES, CalcState, FileEntry
from webapi.errors import ConfigError, NotFound
from webapi.server.config import parse_config
from webapi.store.base import NewCalcRequest
from webapi.store.retention import PURGING, RetentionRule, purge
from webapi.store.yaml_store import YamlJobStore

DAY = 86400.0


def _new(store: YamlJobStore, site: str = "site-a", request_id: str | None = None) -> str:
    req = NewCalcRequest("alice", site, "sample", (), (), request_id=request_id)
    return store.create(req, quota_bytes=0)[0].id


def _finished(store: YamlJobStore, site: str = "site-a", **kw: Any) -> str:
    calc_id = _new(store, site, **kw)
    calc = store.claim(site=site, user="alice", poller="p", wait=0)
    assert calc is not None and calc.id == calc_id and calc.lease is not None
    store.finish(
        calc_id, lease_id=calc.lease.id, exit_code=0, reason=None, results=(), quota_bytes=0
    )
    return calc_id


def _states(store: YamlJobStore) -> dict[str, CalcState]:
    return {c.id: c.state for c in store.list_calcs(user=None, state=None, site=None)}


def test_age_rule_removes_only_final_calcs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = YamlJobStore(tmp_path / "data")
    done = _finished(store, request_id="req-1")
    cancelled = store.cancel(_new(store), "no longer needed").id
    queued = _new(store)
    running = _new(store)
    assert store.claim(site="site-a", user="alice", poller="p", wait=0) is not None  # oldest
    held = store.create(
        NewCalcRequest("alice", "site-a", "sample", (), (), held=True), quota_bytes=0
    )[0].id
    before = _states(store)
    assert before[done] is CalcState.SUCCEEDED and before[cancelled] is CalcState.CANCELLED
    assert {before[queued], before[running], before[held]} <= set(CalcState) - FINAL_STATES

    rule = RetentionRule(max_age_seconds=DAY)
    later = time.time() + 2 * DAY  # everything is two days old by then
    dry = purge(store, lambda _s: rule, dry_run=True, now=later)
    assert {p.id for p in dry.calcs} == {done, cancelled} and dry.dry_run
    assert _states(store) == before  # a dry run removes nothing

    with caplog.at_level(logging.INFO, logger="webapi.store.retention"):
        report = purge(store, lambda _s: rule, now=later)
    assert {p.id for p in report.calcs} == {done, cancelled}
    after = _states(store)
    assert set(after) == set(before) - {done, cancelled}
    assert not (store.root / "calcs" / done).exists()
    assert not list((store.root / PURGING).iterdir())
    assert not list((store.root / "requests" / "alice").iterdir())  # its request id went too
    lines = [r.getMessage() for r in caplog.records if "retention: removed" in r.getMessage()]
    assert len(lines) == 2 and all("ended" in line for line in lines)
    with pytest.raises(NotFound):
        store.get(done)
    # Within the age limit nothing goes.
    assert purge(store, lambda _s: rule).calcs == ()


def test_a_download_that_loses_the_race_to_a_purge_is_404_not_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_file reads the record, then opens the file: a purge in between must not look like a
    damaged store (500) to the reader."""
    store = YamlJobStore(tmp_path / "data")
    data = b"input bytes"
    req = NewCalcRequest(
        "alice", "site-a", "sample", (), (FileEntry("in.txt", len(data), sha(data)),)
    )
    calc = store.create(req, quota_bytes=0)[0]
    store.write_file(calc.id, "inputs", "in.txt", 0, io.BytesIO(data), len(data), None)
    calc = store.cancel(calc.id, "done with it")
    monkeypatch.setattr(store, "get", lambda _id: calc)  # the record as read before the purge
    assert [p.id for p in purge(store, lambda _s: RetentionRule(keep=0)).calcs] == [calc.id]
    with pytest.raises(NotFound):
        store.open_file(calc.id, "inputs", "in.txt")


def test_count_rule_keeps_the_newest_per_site_and_sites_have_their_own(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path / "data")
    a = [_finished(store, "site-a") for _ in range(4)]
    b = [_finished(store, "site-b") for _ in range(3)]
    rules = {"site-a": RetentionRule(keep=1), "site-b": RetentionRule(keep=5)}
    report = purge(store, lambda site: rules[site])
    assert {p.id for p in report.calcs} == set(a[:3])  # the three oldest of site-a
    assert set(_states(store)) == {a[3], *b}
    assert report.kept_final == 4


def test_config_retention_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    base: dict[str, Any] = {"data_dir": "d", "users_file": "u", "sites": {"s": {"commands": []}}}
    conf = parse_config(
        {
            **base,
            "retention": {"max_age_days": 30, "keep": 100, "interval_seconds": 600},
            "sites": {"s": {"commands": [], "retention": {"keep": 5}}, "t": {"commands": []}},
        },
        path,
    )
    assert conf.site_retention("s") == RetentionRule(None, 5)
    assert conf.site_retention("t") == RetentionRule(30 * DAY, 100)
    assert conf.retention_interval_seconds == 600
    assert not parse_config(base, path).retention.active  # default: kept for ever
    bad = [
        ({"retention": {"max_age_days": -1}}, "retention.max_age_days"),
        ({"retention": {"max_age_days": "30d"}}, "retention.max_age_days"),
        ({"retention": {"keep": 1.5}}, "retention.keep"),
        ({"retention": {"keep": True}}, "retention.keep"),
        ({"retention": {"max_age": 3}}, "unknown keys ['max_age']"),
        ({"retention": {"interval_seconds": 0}}, "retention.interval_seconds"),
        ({"retention": [30]}, "expected a mapping"),
        ({"sites": {"s": {"retention": {"interval_seconds": 5}}}}, "sites.s.retention"),
    ]
    for extra, said in bad:
        with pytest.raises(ConfigError) as err:
            parse_config({**base, **extra}, path)
        assert said in str(err.value) and "\n" not in str(err.value), extra


def _run_purge(server: RunningServer, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webapi.cli", "admin", "purge", "--config", str(server.config_path),
         *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def _set_retention(server: RunningServer, retention: dict[str, Any]) -> None:
    conf = yaml.safe_load(server.config_path.read_text())
    conf["retention"] = retention
    server.config_path.write_text(yaml.safe_dump(conf))


def test_admin_purge_beside_a_running_server(
    make_api_server: Callable[..., RunningServer],
) -> None:
    server = make_api_server()
    api = Api(server)
    none = _run_purge(server, "--dry-run")
    assert none.returncode == 2 and "no retention rule is configured" in none.stderr
    _set_retention(server, {"max_age_days": 0})
    calc = api.queued()
    claimed, lease = api.claimed()
    assert claimed["id"] == calc["id"]
    out = b"result\n"
    report = {"lease": lease, "exit_code": 0, "results": [
        {"name": "out.txt", "size": len(out), "sha256": sha(out)}]}  # fmt: skip
    assert api.call("POST", f"/api/v1/calcs/{calc['id']}/finish", json=report).status_code == 200
    assert api.put(calc["id"], "out.txt", out, kind="results", lease=lease).status_code == 200
    waiting = api.queued()

    dry = _run_purge(server, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {calc['id']}" in dry.stdout and waiting["id"] not in dry.stdout
    assert "retention: would remove 1 final calc(s), 3 file(s)" in dry.stdout
    assert api.get(calc["id"])["state"] == "succeeded"

    done = _run_purge(server)
    assert done.returncode == 0, done.stderr
    assert f"removed {calc['id']}" in done.stdout and "retention: removed 1" in done.stdout
    assert api.call("GET", f"/api/v1/calcs/{calc['id']}").status_code == 404
    assert api.get(waiting["id"])["state"] == "queued"
    assert server.tokens["alice"] not in done.stdout + done.stderr


def test_the_server_purges_on_its_own(make_api_server: Callable[..., RunningServer]) -> None:
    server = make_api_server(retention={"max_age_days": 0, "interval_seconds": 1})
    api = Api(server)
    calc = api.queued()
    api.call("POST", f"/api/v1/calcs/{calc['id']}/cancel")
    waiting = api.queued()
    deadline = time.monotonic() + 30
    while api.call("GET", f"/api/v1/calcs/{calc['id']}").status_code != 404:
        assert time.monotonic() < deadline, "the server never purged the cancelled calc"
        time.sleep(0.2)
    assert api.get(waiting["id"])["state"] == "queued"
    log = server.log_path.read_text()
    assert f"retention: removed calc {calc['id']}" in log
    assert server.tokens["alice"] not in log


@pytest.mark.drill
@pytest.mark.slow
def test_drill_purge_races_a_server_with_calcs_finishing(
    make_api_server: Callable[..., RunningServer],
) -> None:
    """`admin purge` runs again and again in other processes (keep 0: every final calc is due
    at once) while calcs are registered, claimed, finished and cancelled through the server.
    Only calcs the server had already ended may go; every other calc, and the store, stays."""
    server = make_api_server(claim_wait_max=0, lease_seconds=600)
    _set_retention(server, {"keep": 0})
    api = Api(server)
    ended: set[str] = set()  # the server answered that these reached a final state
    alive: dict[str, str] = {}  # calc id -> state the client last saw (not final)
    errors: list[str] = []
    stop = threading.Event()

    def workload() -> None:
        out = b"r"
        turn = 0
        while not stop.is_set():
            turn += 1
            calc = api.queued({"in.txt": b"x" * turn})
            cid = calc["id"]
            if turn % 4 == 0:
                resp = api.call("POST", f"/api/v1/calcs/{cid}/cancel")
                if resp.status_code != 200:
                    errors.append(f"cancel {cid}: {resp.status_code} {resp.text}")
                ended.add(cid)
                continue
            resp = api.claim()
            if resp.status_code != 200:
                errors.append(f"claim: {resp.status_code} {resp.text}")
                continue
            got, lease = resp.json()["calc"]["id"], resp.json()["lease"]["id"]
            if turn % 3 == 0:
                alive[got] = "running"  # left running: must survive every purge
                continue
            report = {"lease": lease, "exit_code": turn % 2, "results": [
                {"name": "out.txt", "size": 1, "sha256": sha(out)}]}  # fmt: skip
            resp = api.call("POST", f"/api/v1/calcs/{got}/finish", json=report)
            if resp.status_code != 200:
                errors.append(f"finish {got}: {resp.status_code} {resp.text}")
                continue
            alive[got] = "finishing"  # results declared, not yet uploaded: still running
            resp = api.put(got, "out.txt", out, kind="results", lease=lease)
            if resp.status_code != 200:
                errors.append(f"upload {got}: {resp.status_code} {resp.text}")
                continue
            del alive[got]
            ended.add(got)

    worker = threading.Thread(target=workload)
    worker.start()
    removed: set[str] = set()
    try:
        for _ in range(5):
            run = _run_purge(server)
            assert run.returncode == 0, run.stderr
            removed |= {
                line.split()[1] for line in run.stdout.splitlines() if line.startswith("removed ")
            }
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not errors, errors
    assert removed, "the purges never overlapped a finished calc"
    assert removed <= ended, f"removed calcs that had not ended: {sorted(removed - ended)}"
    for cid, seen in alive.items():
        assert api.get(cid)["state"] == "running", (cid, seen)
    # The store is consistent: every index entry points at a calc in the state it stands for,
    # nothing is half-removed, and a final purge takes exactly the remaining final calcs.
    data = server.data_dir
    for entry in (data / "running").iterdir():
        assert api.get(entry.name)["state"] == "running"
    for entry in (data / "queues").glob("*/*/*"):
        assert api.get(entry.name.partition("-")[2])["state"] == "queued"
    assert not list((data / PURGING).iterdir())
    for calc_dir in (data / "calcs").iterdir():
        assert (calc_dir / "calc.yaml").is_file()
    last = _run_purge(server)
    assert last.returncode == 0, last.stderr
    mine = api.call("GET", "/api/v1/calcs").json()["calcs"]
    assert {c["id"]: c["state"] for c in mine} == dict.fromkeys(alive, "running")
