"""Bring a data dir back to a consistent state after a crash: temp files, partial files, indexes."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from webapi import calcs
from webapi.calcs import Calc
from webapi.contract.calc import CALC_ID_RE, FINAL_STATES, CalcState, FileEntry
from webapi.contract.names import sha256_file
from webapi.fs import is_locked, is_temp, write_yaml_atomic
from webapi.store.finals import Final, of_calc, signature
from webapi.store.records import read_calc

log = logging.getLogger(__name__)
# Marker dirs derived from the records, rebuilt on every open: claim order, the reaper's list,
# idempotent registrations, and registered calcs (for listings by state).
INDEXES = ("queues", "running", "requests", "registered")
MARKED = {"running": CalcState.RUNNING, "registered": CalcState.REGISTERED}  # one marker a calc


def _remove_temp_files(root: Path, unchanged: Collection[str]) -> None:
    """Every `~tmp-*` file, except in the dirs of calcs `unchanged` since the finals index was
    written (their dir mtime matched: no file was created in them since)."""
    calcs_dir = os.path.join(root, "calcs")
    for dirpath, dirs, files in os.walk(root):
        if dirpath == calcs_dir and unchanged:
            dirs[:] = [d for d in dirs if d not in unchanged]
        for name in files:
            if is_temp(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))


def _repair_file(calc_dir: Path, kind: str, entry: FileEntry) -> FileEntry:
    """Make `received` agree with the bytes on disk for one declared file."""
    final = calc_dir / kind / entry.name
    part = calc_dir / "parts" / kind / entry.name
    if entry.complete:
        return entry
    # Crash after moving a verified part into place but before recording it in calc.yaml.
    if final.is_file() and not final.is_symlink():
        if final.stat().st_size == entry.size and sha256_file(final) == entry.sha256:
            return replace(entry, received=entry.size)
        final.unlink()
    if part.is_file() and not part.is_symlink():
        if is_locked(part):
            # Someone is still writing it (an upload in another process): not a crash leftover.
            log.warning("repair: %s is being written by a live process; left alone", part)
            return entry
        size = part.stat().st_size
        if size > entry.received:  # written but never recorded: the next upload resumes earlier
            with open(part, "r+b") as fh:
                fh.truncate(entry.received)
        elif size < entry.received:
            return replace(entry, received=size)
    elif entry.received:
        return replace(entry, received=0)
    return entry


def _repair_calc(calc_dir: Path) -> Calc | None:
    path = calc_dir / "calc.yaml"
    if not path.exists():
        # The calc dir was made but calc.yaml never written: the client never got a 201.
        log.warning("repair: removing %s (no calc.yaml: registration was interrupted)", calc_dir)
        shutil.rmtree(calc_dir, ignore_errors=True)
        return None
    try:
        calc = read_calc(path)
    except Exception as exc:  # a corrupt record must not stop the server from starting
        log.error("repair: cannot read %s (%s); moved aside to calcs-broken/", path, exc)
        broken = calc_dir.parent.parent / "calcs-broken"
        broken.mkdir(exist_ok=True)
        os.replace(calc_dir, broken / calc_dir.name)
        return None
    inputs = tuple(_repair_file(calc_dir, "inputs", f) for f in calc.inputs)
    results = calc.results
    if calc.state is CalcState.RUNNING:
        results = tuple(_repair_file(calc_dir, "results", f) for f in calc.results)
    fixed = calcs.settle(replace(calc, inputs=inputs, results=results), time.time())
    if fixed != calc:
        log.warning("repair: calc %s: file offsets corrected from the data on disk", calc.id)
        write_yaml_atomic(path, fixed.to_record())
    return fixed


def _expected_requests(
    found: list[Calc], finals: dict[str, Final], parsed: set[str]
) -> dict[tuple[str, str], str]:
    """(user, request key) -> calc id, for every calc registered with a request id: the ones
    read now, and the final ones skipped (their keys are in the finals index)."""
    out = {
        (f.user, f.request_key): cid
        for cid, f in finals.items()
        if f.request_key is not None and cid not in parsed
    }
    for calc in found:
        if calc.request_id is not None:
            out[calc.user, calcs.request_key(calc.request_id)] = calc.id
    return out


def _agree_requests(base: Path, expected: dict[tuple[str, str], str]) -> None:
    """Make `requests/<user>/<key>` hold exactly `expected`: entries nobody expects (a purged
    or never-made calc, a crash leftover) go, a wrong or damaged one is rewritten, a missing one
    written. Reading an entry costs a fraction of writing it, and after a clean stop nearly
    every entry is already right: a restart no longer writes one file per registration."""
    right: set[tuple[str, str]] = set()
    base.mkdir(exist_ok=True)
    for user in os.listdir(base):
        udir = f"{base}/{user}"
        try:
            keys = os.listdir(udir)
        except NotADirectoryError:
            os.unlink(udir)
            continue
        for key in keys:
            path = f"{udir}/{key}"
            want = expected.get((user, key))
            try:
                with open(path, encoding="utf-8") as fh:
                    ok = want is not None and fh.read().strip() == want
            except (IsADirectoryError, UnicodeDecodeError):
                ok = False
            if ok:
                right.add((user, key))
            elif os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    for (user, key), calc_id in expected.items():
        if (user, key) not in right:
            os.makedirs(f"{base}/{user}", exist_ok=True)
            # Not fsync'd (as create() writes it): a torn entry is rewritten at the next open.
            with open(f"{base}/{user}/{key}", "w", encoding="utf-8") as fh:
                fh.write(calc_id)


@dataclass(frozen=True, slots=True)
class Opened:
    """What repair found: the calcs it read, and the final calcs it could skip (still final
    and unchanged since the finals index was written) plus those it read, for the next index."""

    calcs: list[Calc]
    finals: dict[str, Final]


def repair(root: Path, known: dict[str, Final] | None = None) -> Opened:
    """Remove crash leftovers and rebuild every index from the calc.yaml files (under the lock,
    by the store's owner only). A calc in `known` (the finals index) whose record and dir are
    unchanged is not read: it is final and has nothing to repair."""
    known = known or {}
    names = [n for n in os.listdir(root / "calcs") if CALC_ID_RE.match(n)]
    finals: dict[str, Final] = {}
    calcs_dir = f"{root}/calcs"  # str paths: ~5x cheaper than Path joins for 100,000 calcs
    for name in names:
        entry = known.get(name)
        if entry is not None and signature(f"{calcs_dir}/{name}") == (entry.record, entry.folder):
            finals[name] = entry
    _remove_temp_files(root, finals)
    found = []
    for name in sorted(names):
        if name in finals:
            continue
        calc = _repair_calc(root / "calcs" / name)
        if calc is not None:
            found.append(calc)
            if calc.state in FINAL_STATES:
                sig = signature(root / "calcs" / name)
                if sig is not None:
                    finals[name] = of_calc(sig, calc)
    # Indexes are derived data: rebuild them from scratch in fresh dirs, then swap them in; the
    # requests index is made to agree in place (one entry per registration ever made).
    parsed = {calc.id for calc in found}
    for index in INDEXES:
        if index == "requests":
            _agree_requests(root / index, _expected_requests(found, finals, parsed))
            continue
        fresh = root / f"{index}.rebuild"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        for calc in found:
            if index == "queues" and calc.state is CalcState.QUEUED:
                qdir = fresh / calc.site / calc.user
                qdir.mkdir(parents=True, exist_ok=True)
                (qdir / calcs.queue_entry(calc)).touch()
            elif MARKED.get(index) is calc.state:
                (fresh / calc.id).touch()
        old = root / f"{index}.old"
        shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(root / index, old)
        os.replace(fresh, root / index)
        shutil.rmtree(old, ignore_errors=True)
    skipped = len(names) - len(found)
    log.info(
        "store: opened %s with %d calcs (%d read, %d final ones unchanged and not read); "
        "indexes rebuilt",
        root,
        len(found) + skipped,
        len(found),
        skipped,
    )
    return Opened(found, finals)
