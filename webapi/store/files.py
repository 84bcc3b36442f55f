"""Stream uploaded input and result files to disk in chunks, resumable by offset, sha256-checked."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO, Protocol

from webapi import calcs
from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileEntry
from webapi.contract.names import safe_join
from webapi.errors import (
    BadRequest,
    ChecksumMismatch,
    Conflict,
    InsufficientStorage,
    OffsetMismatch,
    TooLarge,
)
from webapi.fs import FileLock, disk_full, fsync_dir
from webapi.store.base import Kind
from webapi.store.sink import HashingWriter, hash_prefix

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


def _open_part(part: Path, name: str) -> int:
    """The part file of an upload, opened and locked: one writer per file at a time."""
    part.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Conflict(f"another upload of {name!r} is in progress; retry later") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


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
            fd = _open_part(part, name)
        try:
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
        # One pass: hash what is written as it is written (and, on a resume, the bytes already
        # here, once); the commit then only checks that the file still has those bytes.
        os.lseek(fd, offset, os.SEEK_SET)
        writer = HashingWriter(fd, hash_prefix(fd, offset), offset)
        written, truncated, too_big = 0, False, False
        remaining = length
        try:
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
                writer.write(block)
                written += len(block)
                if remaining is not None:
                    remaining -= len(block)
            sha256 = writer.hexdigest()
            if not too_big:
                # The one durability point of this request: before it is acknowledged.
                os.fsync(fd)
        except OSError as exc:
            writer.close()
            if not disk_full(exc):
                raise
            os.ftruncate(fd, offset)  # give the space back; the upload resumes from offset
            raise InsufficientStorage(
                f"{kind[:-1]} {name!r}: the server's disk is full ({exc.strerror}); nothing was "
                f"lost: resume from offset {offset} later"
            ) from None
        except BaseException:
            writer.close()
            raise
        if too_big:
            os.ftruncate(fd, offset)
            raise TooLarge(f"{kind[:-1]} {name!r}: the body is larger than the declared size")
        received = offset + written
        if received == entry.size and sha256 != entry.sha256:
            self._commit(calc_id, kind, name, 0, None, part, fd, received)
            raise ChecksumMismatch(
                f"{kind[:-1]} {name!r}: sha256 of the received bytes is {sha256}, "
                f"not {entry.sha256}; the upload was discarded, send it again from offset 0"
            )
        done = final if received == entry.size else None
        calc = self._commit(calc_id, kind, name, received, done, part, fd, received)
        if truncated:
            raise BadRequest(
                f"{kind[:-1]} {name!r}: the body ended after {written} of {length} bytes; "
                f"resume from offset {received}"
            )
        return calc, _entry(calc, kind, name)

    def adopt(
        self,
        calc_id: str,
        kind: Kind,
        name: str,
        source: Path,
        sha256: str,
        lease_id: str | None,
    ) -> tuple[Calc, FileEntry]:
        """Make `source` (a whole file already written elsewhere in the data dir, its sha256
        computed as it was written) the calc's file by renaming it: no copy, no second hash.

        The file is fsynced first, then renamed, then its dir is fsynced, and only then is it
        recorded; a file of another size or sha256 than declared is refused and left to the
        caller. A `source` on another file system is copied through `write` instead.
        """
        store = self.store
        final, part = self.paths(calc_id, kind, name)
        with store.lock():
            calc = store.load(calc_id)
            if _entry(calc, kind, name).complete:
                return calc, _entry(calc, kind, name)  # a retry after a lost answer
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            size = os.fstat(fd).st_size
            os.fsync(fd)  # durable before it is recorded: the rename below only moves a name
        finally:
            os.close(fd)
        with store.lock():
            calc = store.load(calc_id)
            entry = _entry(calc, kind, name)
            if entry.complete:
                return calc, entry  # completed by another request meanwhile
            _check_writable(calc, kind, lease_id)
            if size != entry.size or sha256 != entry.sha256:
                raise ChecksumMismatch(
                    f"{kind[:-1]} {name!r}: the file has {size} bytes with sha256 {sha256}, not "
                    f"the declared {entry.size} bytes with sha256 {entry.sha256}"
                )
            # An upload of the same file through the native route holds its part file: let it
            # finish rather than swap the file under it.
            pfd = _open_part(part, name)
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(source, final)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    crossed = True
                else:
                    crossed = False
                    fsync_dir(final.parent)
                if not crossed:
                    os.unlink(part)  # nothing partial is left of an earlier, broken upload
                    new = _record(calc, kind, name, entry.size, time.time())
                    try:
                        saved = store.save(calc, new)
                    except OSError:
                        os.replace(final, source)  # not recorded: give it back to the caller
                        raise
                    if new.state is not calc.state:
                        log.info("calc %s: %s → %s", calc_id, calc.state, new.state)
                    return saved, _entry(saved, kind, name)
            finally:
                os.close(pfd)
        # Another file system (a staging dir mounted elsewhere): copy it, resuming any part.
        with open(source, "rb") as fh:
            fh.seek(entry.received)
            return self.write(
                calc_id, kind, name, entry.received, fh, size - entry.received, lease_id
            )

    def _commit(
        self,
        calc_id: str,
        kind: Kind,
        name: str,
        received: int,
        final: Path | None,
        part: Path,
        fd: int,
        written: int,
    ) -> Calc:
        """Record `received` in calc.yaml; on completion move the part file to its final name.

        The part must still hold the `written` bytes this upload left in it: if anything else
        changed it, nothing is recorded and the upload starts over (never a short file recorded
        whole).
        """
        store = self.store
        with store.lock():
            calc = store.load(calc_id)
            # A cancel (or lease loss) during the upload wins: keep nothing, change nothing.
            _check_writable(calc, kind, None)
            if _entry(calc, kind, name).complete:
                raise Conflict(f"{kind[:-1]} {name!r} was completed by another request meanwhile")
            size = os.fstat(fd).st_size
            changed = size != written
            if changed:
                log.error(
                    "calc %s: %s %r: the partial file has %d bytes, %d were written; discarded",
                    calc_id,
                    kind[:-1],
                    name,
                    size,
                    written,
                )
                os.ftruncate(fd, 0)
                final, received = None, 0
            if final is not None:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, final)
                fsync_dir(final.parent)
            elif received == 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)
            new = _record(calc, kind, name, received, time.time())
            try:
                saved = store.save(calc, new)
            except OSError:
                if final is not None:  # not recorded: put it back, a retry commits it again
                    os.replace(final, part)
                raise
            if new.state is not calc.state:
                log.info("calc %s: %s → %s", calc_id, calc.state, new.state)
        if changed:
            raise Conflict(
                f"{kind[:-1]} {name!r}: the partial file changed on the server while it was "
                "uploaded; it was discarded: send it again from offset 0"
            )
        return saved
