"""The store's file path: one-pass hashing on a helper thread, the part file adopted by rename,
one fsync at the end, and files adopted whole from the data dir (the original protocol's)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from webapi import hashing
from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileEntry
from webapi.errors import BadRequest, ChecksumMismatch, Conflict, InsufficientStorage
from webapi.store import files as files_mod
from webapi.store import sink
from webapi.store.base import NewCalcRequest
from webapi.store.yaml_store import YamlJobStore

MIB = 1 << 20
# Larger than hashing.THREAD_MIN_BYTES and sink.WRITEBACK_BYTES, so the helper thread and the early
# writeback both take part.
BIG = os.urandom(20 * MIB)
NAME = "in.bin"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_calc(store: YamlJobStore, data: bytes = BIG) -> Calc:
    req = NewCalcRequest("alice", "site-a", "sample", (), (FileEntry(NAME, len(data), sha(data)),))
    calc, _ = store.create(req, quota_bytes=0)
    return calc


def hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sha256"]


def put(store: YamlJobStore, calc: Calc, body: bytes, offset: int = 0, length: int = -1) -> Calc:
    n = len(body) if length < 0 else length
    calc, _ = store.write_file(calc.id, "inputs", NAME, offset, io.BytesIO(body), n, None)
    return calc


def leftovers(root: Path) -> list[str]:
    """Every file under the calc dirs but the records: what an upload left on disk."""
    return sorted(
        str(p.relative_to(root))
        for p in (root / "calcs").rglob("*")
        if p.is_file() and p.name != "calc.yaml"
    )


def test_a_big_upload_is_hashed_on_the_way_and_its_part_file_becomes_the_file(
    tmp_path: Path,
) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    half = len(BIG) // 2
    with pytest.raises(BadRequest, match=f"resume from offset {half}"):
        put(store, calc, BIG[:half], length=len(BIG))  # the client vanished mid-body
    part, final = store.files.paths(calc.id, "inputs", NAME)[::-1]
    inode = part.stat().st_ino
    assert part.stat().st_size == half and not final.exists()
    calc = put(store, calc, BIG[half:], offset=half)
    assert calc.state is CalcState.QUEUED and calc.input(NAME).complete
    # Renamed, not copied: the bytes written by both requests are the stored file's inode.
    assert final.stat().st_ino == inode and not part.exists()
    assert sha(final.read_bytes()) == sha(BIG)
    assert hash_threads() == []


def test_a_big_mismatched_upload_leaves_no_file_and_no_temp(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    bad = BIG[:-1] + bytes([BIG[-1] ^ 1])
    with pytest.raises(ChecksumMismatch, match="send it again from offset 0"):
        put(store, calc, bad)
    assert store.get(calc.id).input(NAME).received == 0
    assert leftovers(tmp_path) == []
    assert hash_threads() == []
    assert put(store, calc, BIG).state is CalcState.QUEUED


def test_a_full_disk_at_the_final_fsync_refuses_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync before the acknowledgement fails (ENOSPC: delayed allocation found no room):
    507, nothing recorded, the space given back; once there is room the upload completes."""
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    real_fsync = os.fsync
    failing = [True]

    def fsync(fd: int) -> None:
        if failing[0] and "/parts/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files_mod.os, "fsync", fsync)
    with pytest.raises(InsufficientStorage, match="resume from offset 0"):
        put(store, calc, BIG)
    assert store.get(calc.id).input(NAME).received == 0
    part, final = store.files.paths(calc.id, "inputs", NAME)[::-1]
    assert not final.exists() and part.stat().st_size == 0
    assert hash_threads() == []
    failing[0] = False
    assert put(store, calc, BIG).state is CalcState.QUEUED
    assert sha(final.read_bytes()) == sha(BIG)


def test_a_disk_full_mid_body_stops_the_hashing_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    real_write = os.write
    calls = [0]

    def write(fd: int, data: bytes | memoryview) -> int:
        calls[0] += 1
        if calls[0] == 5 and "/parts/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(sink.os, "write", write)
    with pytest.raises(InsufficientStorage):
        put(store, calc, BIG)
    assert hash_threads() == []
    assert store.get(calc.id).input(NAME).received == 0


def staged(tmp_path: Path, data: bytes) -> Path:
    """A decoded file as the original protocol's routes leave it: in the data dir's staging."""
    path = tmp_path / "mint-staging" / "~tmp-0123" / "~tmp-0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_adopt_moves_the_file_in_without_copying_or_hashing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    source = staged(tmp_path, BIG)
    inode = source.stat().st_ino

    def no_hashing(*_args: object) -> object:
        raise AssertionError("adopt must carry the sha256, not compute it")

    monkeypatch.setattr(files_mod, "hash_prefix", no_hashing)
    monkeypatch.setattr(files_mod, "HashingWriter", no_hashing)
    calc, entry = store.adopt_file(calc.id, "inputs", NAME, source, sha(BIG), None)
    assert entry.complete and calc.state is CalcState.QUEUED
    final = store.files.paths(calc.id, "inputs", NAME)[0]
    assert final.stat().st_ino == inode and not source.exists()
    assert leftovers(tmp_path) == [f"calcs/{calc.id}/inputs/{NAME}"]
    # A retry after a lost answer changes nothing.
    again, entry = store.adopt_file(calc.id, "inputs", NAME, source, sha(BIG), None)
    assert entry.complete and again == calc


def test_adopt_refuses_a_file_other_than_declared_and_leaves_it_to_the_caller(
    tmp_path: Path,
) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    source = staged(tmp_path, BIG)
    with pytest.raises(ChecksumMismatch, match="not the declared"):
        store.adopt_file(calc.id, "inputs", NAME, source, "0" * 64, None)
    short = staged(tmp_path, BIG[:-1])
    with pytest.raises(ChecksumMismatch):
        store.adopt_file(calc.id, "inputs", NAME, short, sha(BIG), None)
    assert short.exists() and store.get(calc.id).input(NAME).received == 0
    assert leftovers(tmp_path) == []


def test_adopt_replaces_a_broken_partial_upload_but_not_a_live_one(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    with pytest.raises(BadRequest):
        put(store, calc, BIG[:MIB], length=len(BIG))
    part = store.files.paths(calc.id, "inputs", NAME)[1]
    source = staged(tmp_path, BIG)
    # A native upload in progress holds its part file: the adopt waits its turn.
    fd = os.open(part, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(Conflict, match="in progress"):
            store.adopt_file(calc.id, "inputs", NAME, source, sha(BIG), None)
    finally:
        os.close(fd)
    assert source.exists()
    calc, entry = store.adopt_file(calc.id, "inputs", NAME, source, sha(BIG), None)
    assert entry.complete and not part.exists()
    assert leftovers(tmp_path) == [f"calcs/{calc.id}/inputs/{NAME}"]


def test_adopt_gives_the_file_back_when_the_record_cannot_be_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = YamlJobStore(tmp_path)
    calc = new_calc(store)
    source = staged(tmp_path, BIG)

    def save(_old: Calc | None, _new: Calc) -> Calc:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "save", save)
    with pytest.raises(OSError):
        store.adopt_file(calc.id, "inputs", NAME, source, sha(BIG), None)
    monkeypatch.undo()
    assert source.exists() and sha(source.read_bytes()) == sha(BIG)
    assert store.get(calc.id).input(NAME).received == 0
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("size", [0, 10, hashing.THREAD_MIN_BYTES + 1])
def test_hashing_writer_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        writer = sink.HashingWriter(fd, hashlib.sha256(), 0)
        for i in range(0, size, 65536 + 7):
            writer.write(data[i : i + 65536 + 7])
        assert writer.hexdigest() == sha(data)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data


def test_a_dropped_background_hash_stops_its_thread() -> None:
    """A decode that fails mid-file never reaches close(): the thread still ends."""
    bg = hashing.BackgroundHash()
    bg.update(os.urandom(hashing.THREAD_MIN_BYTES))
    thread = bg._thread
    assert thread is not None and thread.is_alive()
    del bg
    thread.join(timeout=30)
    assert not thread.is_alive()
