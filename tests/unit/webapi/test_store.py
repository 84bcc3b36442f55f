"""YamlJobStore: atomic records, indexes, streaming uploads, claims, leases, crash repair."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileEntry
from webapi.errors import (
    BadRequest,
    ChecksumMismatch,
    ConfigError,
    Conflict,
    NotFound,
    OffsetMismatch,
    TooLarge,
)
from webapi.store.base import NewCalcRequest, SitePolicy
from webapi.store.yaml_store import YamlJobStore

DATA = b"0123456789" * 1000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_calc(store: YamlJobStore, data: bytes = DATA, **kw: object) -> Calc:
    req = NewCalcRequest(
        user=str(kw.get("user", "alice")),
        site="site-a",
        command="sample",
        args=(),
        inputs=(FileEntry("in/data.bin", len(data), sha(data)),),
        request_id=kw.get("request_id"),  # type: ignore[arg-type]
    )
    calc, _ = store.create(req, quota_bytes=int(kw.get("quota", 0)))  # type: ignore[call-overload]
    return calc


def upload(store: YamlJobStore, calc: Calc, data: bytes = DATA, offset: int = 0) -> Calc:
    body = data[offset:]
    calc, _ = store.write_file(
        calc.id, "inputs", "in/data.bin", offset, io.BytesIO(body), len(body), None
    )
    return calc


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if name != ".lock":
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def test_create_writes_record_and_request_id_is_idempotent(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store, request_id="r1")
    assert (tmp_path / "calcs" / calc.id / "calc.yaml").exists()
    again, created = store.create(
        NewCalcRequest("alice", "site-a", "sample", (), (), request_id="r1"), quota_bytes=0
    )
    assert not created and again.id == calc.id
    assert store.get(calc.id) == calc
    with pytest.raises(NotFound):
        store.get("c-" + "f" * 32)
    with pytest.raises(NotFound):
        store.get("../etc")


def test_quota(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    with pytest.raises(TooLarge, match="quota"):
        new_calc(store, quota=100)
    assert os.listdir(tmp_path / "calcs") == []


def test_upload_in_two_parts_then_queued(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    part = DATA[:4000]
    _, entry = store.write_file(calc.id, "inputs", "in/data.bin", 0, io.BytesIO(part), 4000, None)
    assert entry.received == 4000 and not entry.complete
    with pytest.raises(OffsetMismatch) as err:
        upload(store, calc, offset=0)
    assert err.value.offset == 4000
    calc = upload(store, calc, offset=4000)
    assert calc.state is CalcState.QUEUED
    assert (tmp_path / "calcs" / calc.id / "inputs/in/data.bin").read_bytes() == DATA
    assert len(os.listdir(tmp_path / "queues/site-a/alice")) == 1
    fh, size = store.open_file(calc.id, "inputs", "in/data.bin")
    with fh:
        assert size == len(DATA) and fh.read() == DATA
    # A retry of a complete file is a no-op; other offsets learn the server's offset.
    _, entry = store.write_file(calc.id, "inputs", "in/data.bin", len(DATA), io.BytesIO(), 0, None)
    assert entry.complete


def test_checksum_mismatch_discards(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    bad = b"X" + DATA[1:]
    with pytest.raises(ChecksumMismatch, match="offset 0"):
        upload(store, calc, bad)
    assert store.get(calc.id).inputs[0].received == 0
    assert not (tmp_path / "calcs" / calc.id / "inputs/in/data.bin").exists()
    assert upload(store, calc).state is CalcState.QUEUED


def test_oversize_and_truncated_bodies(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    with pytest.raises(TooLarge):
        store.write_file(
            calc.id, "inputs", "in/data.bin", 0, io.BytesIO(DATA + b"x"), len(DATA) + 1, None
        )
    with pytest.raises(TooLarge):  # chunked: the size is only known while reading
        store.write_file(calc.id, "inputs", "in/data.bin", 0, io.BytesIO(DATA + b"x"), None, None)
    assert store.get(calc.id).inputs[0].received == 0
    with pytest.raises(BadRequest, match="resume from offset 300"):
        store.write_file(calc.id, "inputs", "in/data.bin", 0, io.BytesIO(DATA[:300]), 1000, None)
    assert store.get(calc.id).inputs[0].received == 300
    assert upload(store, calc, offset=300).state is CalcState.QUEUED


def test_bad_names_and_symlinks_change_nothing(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    calc_dir = tmp_path / "calcs" / calc.id
    (calc_dir / "parts").mkdir()
    os.symlink("/tmp", calc_dir / "parts" / "inputs")
    before = snapshot(tmp_path)
    for name in ("../x", "/etc/passwd", "a//b", "in/data.bin"):
        with pytest.raises((BadRequest, NotFound)):
            store.write_file(calc.id, "inputs", name, 0, io.BytesIO(b"x"), 1, None)
    assert snapshot(tmp_path) == before


def test_claim_order_user_filter_and_lease_expiry(tmp_path: Path) -> None:
    policy = SitePolicy(lease_seconds=1, max_attempts=2)
    store = YamlJobStore(tmp_path, lambda _site: policy)
    first, second = upload(store, new_calc(store)), upload(store, new_calc(store))
    assert store.claim(site="site-a", user="bob", poller="p", wait=0) is None
    assert store.claim(site="site-b", user="alice", poller="p", wait=0) is None
    got = store.claim(site="site-a", user="alice", poller="p", wait=0)
    assert got is not None and got.id == first.id and got.state is CalcState.RUNNING
    assert os.listdir(tmp_path / "running") == [first.id]
    import time

    time.sleep(1.1)
    assert store.reap() == 1
    back = store.get(first.id)
    assert back.state is CalcState.QUEUED and back.attempts == 1
    assert store.claim(site="site-a", user="alice", poller="p", wait=0).id == second.id  # type: ignore[union-attr]
    assert store.poller_seen("site-a") is not None


def test_long_poll_wakes_on_queue(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    got: list[Calc | None] = []
    waiter = threading.Thread(
        target=lambda: got.append(store.claim(site="site-a", user="alice", poller="p", wait=20))
    )
    waiter.start()
    upload(store, calc)
    waiter.join(timeout=10)
    assert not waiter.is_alive() and got[0] is not None and got[0].id == calc.id


def test_concurrent_claims_never_double_claim(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    ids = {upload(store, new_calc(store, b"x"), b"x").id for _ in range(40)}
    claimed: list[str] = []
    lock = threading.Lock()

    def poll() -> None:
        while True:
            calc = store.claim(site="site-a", user="alice", poller="p", wait=0)
            if calc is None:
                return
            with lock:
                claimed.append(calc.id)

    threads = [threading.Thread(target=poll) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(claimed) == sorted(ids)


def test_one_owner_per_data_dir(tmp_path: Path) -> None:
    YamlJobStore(tmp_path)
    with pytest.raises(ConfigError, match=rf"in use by another process \(pid {os.getpid()}\)"):
        YamlJobStore(tmp_path)


def test_a_store_beside_the_owner_shares_the_lock(tmp_path: Path) -> None:
    one, two = YamlJobStore(tmp_path), YamlJobStore.beside_server(tmp_path)
    assert two.owner.held is False
    calc = upload(one, new_calc(one))
    assert two.claim(site="site-a", user="alice", poller="p", wait=0).id == calc.id  # type: ignore[union-attr]
    assert one.claim(site="site-a", user="alice", poller="p", wait=0) is None


def test_repair_after_crashes(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    queued = upload(store, new_calc(store))
    partial = new_calc(store)
    store.write_file(partial.id, "inputs", "in/data.bin", 0, io.BytesIO(DATA[:100]), 100, None)
    moved = new_calc(store)
    # Crash leftovers: a temp file, bytes past the recorded offset, a lost queue marker,
    # a verified file moved into place but not recorded, a calc dir without calc.yaml.
    (tmp_path / "calcs" / queued.id / "~tmp-abc").write_bytes(b"junk")
    with open(tmp_path / "calcs" / partial.id / "parts/inputs/in/data.bin", "ab") as fh:
        fh.write(b"garbage")
    for entry in os.listdir(tmp_path / "queues/site-a/alice"):
        os.unlink(tmp_path / "queues/site-a/alice" / entry)
    final = tmp_path / "calcs" / moved.id / "inputs/in/data.bin"
    final.parent.mkdir(parents=True)
    final.write_bytes(DATA)
    (tmp_path / "calcs" / ("c-" + "9" * 32)).mkdir()

    store.owner.release()  # the process that owned it died
    store = YamlJobStore(tmp_path)
    assert not (tmp_path / "calcs" / queued.id / "~tmp-abc").exists()
    assert not (tmp_path / "calcs" / ("c-" + "9" * 32)).exists()
    assert (tmp_path / "calcs" / partial.id / "parts/inputs/in/data.bin").stat().st_size == 100
    assert store.get(moved.id).state is CalcState.QUEUED
    assert len(os.listdir(tmp_path / "queues/site-a/alice")) == 2
    assert upload(store, partial, offset=100).state is CalcState.QUEUED


def test_cancel_and_requeue(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    calc = upload(store, new_calc(store))
    cancelled = store.cancel(calc.id, "by alice")
    assert cancelled.state is CalcState.CANCELLED
    assert os.listdir(tmp_path / "queues/site-a/alice") == []
    with pytest.raises(Conflict):
        upload(store, calc)
    assert store.requeue(calc.id).state is CalcState.QUEUED
    assert store.list_calcs(user="alice", state=CalcState.QUEUED, site=None)[0].id == calc.id
    assert store.list_calcs(user="bob", state=None, site=None) == []


def test_queued_calcs_expire(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path, lambda _site: SitePolicy(queued_expiry_seconds=0))
    calc = upload(store, new_calc(store))
    assert store.reap() == 1
    failed = store.get(calc.id)
    assert failed.state is CalcState.FAILED and "expired in the queue" in (failed.reason or "")
    assert os.listdir(tmp_path / "queues/site-a/alice") == []
