"""Stream uploaded input and result files to disk in chunks, resumable by offset, sha256-checked."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO, Protocol

from webapi import calcs
from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileEntry
from webapi.contract.names import safe_join, sha256_file
from webapi.errors import BadRequest, ChecksumMismatch, Conflict, OffsetMismatch, TooLarge
from webapi.fs import FileLock, fsync_dir
from webapi.store.base import Kind

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def _entry(calc: Calc, kind: Kind, name: str) -> FileEntry:
    return calc.input(name) if kind == "inputs" else calc.result(name)


def _check_writable(calc: Calc, kind: Kind, lease_id: str | None) -> None:
    if kind == "inputs":
        if calc.state is not CalcState.REGISTERED:
            raise Conflict(f"calc {calc.id} is {calc.state}: its inputs can no longer change")
        return
    if calc.state is not CalcState.RUNNING:
        raise Conflict(f"calc {calc.id} is {calc.state}, not running: results are not accepted")
    if lease_id is not None:
        calcs.check_lease(calc, lease_id)
    if not calc.results_declared:
        raise Conflict(f"calc {calc.id}: declare the results with /finish before uploading them")


def _record(calc: Calc, kind: Kind, name: str, received: int, now: float) -> Calc:
    if kind == "inputs":
        return calcs.record_input(calc, name, received, now)
    assert calc.lease is not None
    return calcs.record_result(calc, lease_id=calc.lease.id, name=name, received=received, now=now)


class Records(Protocol):
    """What file transfers need of the store: its lock, calc dirs and calc records."""

    lock: FileLock

    def calc_dir(self, calc_id: str) -> Path: ...
    def load(self, calc_id: str) -> Calc: ...
    def save(self, old: Calc | None, new: Calc) -> Calc: ...


class FileTransfers:
    """Uploads run outside the store lock (only the part file is locked) so a slow client never
    blocks other requests; the store lock is taken briefly before and after to check and record.
    """

    def __init__(self, store: Records) -> None:
        self.store = store

    def paths(self, calc_id: str, kind: Kind, name: str) -> tuple[Path, Path]:
        """(final path, partial-upload path) — both checked against traversal and symlinks."""
        root = self.store.calc_dir(calc_id)
        return safe_join(root, f"{kind}/{name}"), safe_join(root, f"parts/{kind}/{name}")

    def write(
        self,
        calc_id: str,
        kind: Kind,
        name: str,
        offset: int,
        body: BinaryIO,
        length: int | None,
        lease_id: str | None,
    ) -> tuple[Calc, FileEntry]:
        store = self.store
        final, part = self.paths(calc_id, kind, name)
        with store.lock():
            calc = store.load(calc_id)
            entry = _entry(calc, kind, name)
            if entry.complete:
                # A retry after a lost answer: the file is already in place.
                if offset == entry.size and not length:
                    return calc, entry
                raise OffsetMismatch(
                    f"{kind[:-1]} {name!r} is already complete ({entry.size} bytes)",
                    offset=entry.size,
                )
            _check_writable(calc, kind, lease_id)
            if offset != entry.received:
                raise OffsetMismatch(
                    f"{kind[:-1]} {name!r}: the server holds {entry.received} bytes; "
                    f"send from offset {entry.received}",
                    offset=entry.received,
                )
            if length is not None and offset + length > entry.size:
                raise TooLarge(
                    f"{kind[:-1]} {name!r}: {offset}+{length} bytes is more than the declared "
                    f"size {entry.size}"
                )
            part.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Conflict(f"another upload of {name!r} is in progress; retry later") from None
            return self._stream(calc_id, kind, name, offset, body, length, fd, final, part)
        finally:
            os.close(fd)

    def _stream(
        self,
        calc_id: str,
        kind: Kind,
        name: str,
        offset: int,
        body: BinaryIO,
        length: int | None,
        fd: int,
        final: Path,
        part: Path,
    ) -> tuple[Calc, FileEntry]:
        store = self.store
        with store.lock():  # another upload may have advanced it before we got the file lock
            entry = _entry(store.load(calc_id), kind, name)
            if entry.received != offset:
                raise OffsetMismatch(
                    f"{kind[:-1]} {name!r}: the server now holds {entry.received} bytes",
                    offset=entry.received,
                )
        # Bytes past the recorded offset are leftovers of an interrupted request: drop them.
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        written, truncated, too_big = 0, False, False
        remaining = length
        while remaining is None or remaining > 0:
            want = CHUNK if remaining is None else min(CHUNK, remaining)
            try:
                block = body.read(want)
            except (OSError, ValueError):
                block = b""
            if not block:
                truncated = remaining is not None
                break
            if offset + written + len(block) > entry.size:
                too_big = True
                break
            os.write(fd, block)  # a regular file: one write takes the whole block
            written += len(block)
            if remaining is not None:
                remaining -= len(block)
        if too_big:
            os.ftruncate(fd, offset)
            raise TooLarge(f"{kind[:-1]} {name!r}: the body is larger than the declared size")
        os.fsync(fd)
        received = offset + written
        if received == entry.size:
            digest = sha256_file(part)  # outside the store lock; our flock keeps the file still
            if digest != entry.sha256:
                calc = self._commit(calc_id, kind, name, 0, None, part)
                raise ChecksumMismatch(
                    f"{kind[:-1]} {name!r}: sha256 of the received bytes is {digest}, not "
                    f"{entry.sha256}; the upload was discarded, send it again from offset 0"
                )
        calc = self._commit(
            calc_id, kind, name, received, final if received == entry.size else None, part
        )
        if truncated:
            raise BadRequest(
                f"{kind[:-1]} {name!r}: the body ended after {written} of {length} bytes; "
                f"resume from offset {received}"
            )
        return calc, _entry(calc, kind, name)

    def _commit(
        self, calc_id: str, kind: Kind, name: str, received: int, final: Path | None, part: Path
    ) -> Calc:
        """Record `received` in calc.yaml; on completion move the part file to its final name."""
        store = self.store
        with store.lock():
            calc = store.load(calc_id)
            # A cancel (or lease loss) during the upload wins: keep nothing, change nothing.
            _check_writable(calc, kind, None)
            if final is not None:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, final)
                fsync_dir(final.parent)
            elif received == 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)
            new = _record(calc, kind, name, received, time.time())
            if new.state is not calc.state:
                log.info("calc %s: %s → %s", calc_id, calc.state, new.state)
            return store.save(calc, new)
