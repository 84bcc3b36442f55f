"""Retention: remove final calcs (and their files) past a site's age or count limit.

Only calcs in the store's final states (FINAL_STATES: succeeded, failed, cancelled — an expired
lease or queue wait ends as failed) are ever removed. Each one is re-read and checked under the
store lock and its directory moved out of `calcs/` in that same step, so a purge run beside a
live server (the admin command, another process) can never remove a calc that changed meanwhile,
and readers see the calc either whole or gone. The files are deleted after the lock is released.
Which calcs are final, where and since when is taken from the finals index for every calc whose
record it still vouches for (see webapi.store.finals), so a purge parses only the other records;
the check under the lock reads the record itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

from webapi import calcs
from webapi.calcs import Calc
from webapi.contract.calc import FINAL_STATES
from webapi.errors import NotFound
from webapi.fs import FileLock
from webapi.store import finals

log = logging.getLogger(__name__)
# Where a calc dir goes, under the lock, before its files are deleted (outside the lock).
PURGING = "purging"


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """How long and how many final calcs of one site are kept (None: no limit of that kind)."""

    max_age_seconds: float | None = None
    keep: int | None = None

    @property
    def active(self) -> bool:
        return self.max_age_seconds is not None or self.keep is not None


@dataclass(frozen=True, slots=True)
class Purged:
    """One calc a purge removed (or, dry run, would remove)."""

    id: str
    site: str
    state: str
    ended_ago: float  # seconds since it reached its final state
    files: int
    bytes: int
    why: str


@dataclass(frozen=True, slots=True)
class Ended:
    """A final calc as a purge judges it: from its record, or from the finals index."""

    id: str
    site: str
    state: str
    updated: float  # when it reached its final state


@dataclass(frozen=True, slots=True)
class PurgeReport:
    calcs: tuple[Purged, ...]
    dry_run: bool
    kept_final: int  # final calcs within their site's limits

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.calcs)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"retention: {verb} {len(self.calcs)} final calc(s), "
            f"{sum(p.files for p in self.calcs)} file(s), {self.bytes} bytes; "
            f"kept {self.kept_final} final calc(s)"
        )


class _Store(Protocol):
    """What a purge needs of YamlJobStore (structural: the store imports this module)."""

    @property
    def root(self) -> Path: ...
    @property
    def lock(self) -> FileLock: ...
    def read(self, calc_id: str) -> Calc: ...
    def calc_dir(self, calc_id: str) -> Path: ...
    def known_finals(self) -> Mapping[str, finals.Final]: ...


def _final_calcs(store: _Store) -> Iterator[Ended]:
    known = store.known_finals()
    for entry in sorted(os.listdir(store.root / "calcs")):
        final = finals.vouched(store.root, known, entry)
        summary = None if final is None else final.summary
        if summary is not None:
            yield Ended(entry, *summary)
            continue
        try:
            calc = store.read(entry)
        except (NotFound, OSError, yaml.YAMLError, TypeError, ValueError):
            continue  # vanished, half-made or broken: not ours to judge (repair's job)
        if calc.state in FINAL_STATES:
            yield Ended(calc.id, calc.site, str(calc.state), calc.updated)


def _due(
    final: list[Ended], rule_for: Callable[[str], RetentionRule], now: float
) -> tuple[list[tuple[Ended, str]], int]:
    """The calcs past their site's limits, with why; and how many final calcs stay."""
    by_site: dict[str, list[Ended]] = {}
    for calc in final:
        by_site.setdefault(calc.site, []).append(calc)
    due: list[tuple[Ended, str]] = []
    kept = 0
    for site, found in sorted(by_site.items()):
        rule = rule_for(site)
        found.sort(key=lambda c: (c.updated, c.id), reverse=True)  # newest first
        for rank, calc in enumerate(found):
            age = now - calc.updated
            if rule.keep is not None and rank >= rule.keep:
                due.append((calc, f"over the {rule.keep} kept for site {site}"))
            elif rule.max_age_seconds is not None and age > rule.max_age_seconds:
                due.append((calc, f"ended more than {rule.max_age_seconds:g} s ago"))
            else:
                kept += 1
    return due, kept


def _size(path: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
    return files, size


def purge(
    store: _Store,
    rule_for: Callable[[str], RetentionRule],
    *,
    dry_run: bool = False,
    now: float | None = None,
) -> PurgeReport:
    """Remove the final calcs past their site's retention rule; log one line per calc."""
    now = time.time() if now is None else now
    trash = store.root / PURGING
    if not dry_run:
        # A purge that died between moving a calc dir and deleting it left it here.
        with contextlib.suppress(FileNotFoundError):
            for left in os.listdir(trash):
                shutil.rmtree(trash / left, ignore_errors=True)
    due, kept = _due(list(_final_calcs(store)), rule_for, now)
    done: list[Purged] = []
    for seen, why in due:
        if dry_run:
            files, size = _size(store.calc_dir(seen.id))
            done.append(_purged(seen, why, now, files, size))
            continue
        gone = _take(store, seen, trash)
        if gone is None:
            continue
        files, size = _size(gone)
        shutil.rmtree(gone, ignore_errors=True)
        entry = _purged(seen, why, now, files, size)
        log.info(
            "retention: removed calc %s (site %s, %s, ended %.0f s ago, %d file(s), %d bytes): %s",
            entry.id,
            entry.site,
            entry.state,
            entry.ended_ago,
            entry.files,
            entry.bytes,
            why,
        )
        done.append(entry)
    return PurgeReport(tuple(done), dry_run, kept)


def _purged(calc: Ended, why: str, now: float, files: int, size: int) -> Purged:
    return Purged(calc.id, calc.site, calc.state, now - calc.updated, files, size, why)


def _take(store: _Store, seen: Ended, trash: Path) -> Path | None:
    """Under the store lock: if the calc is still the final record we judged, move its dir out
    of `calcs/` (one rename: readers see it whole or not at all) and drop its request-id entry."""
    with store.lock():
        try:
            now_is = store.read(seen.id)
        except NotFound:
            return None
        if now_is.state not in FINAL_STATES or now_is.updated != seen.updated:
            log.info("retention: calc %s changed since it was judged; kept", seen.id)
            return None
        trash.mkdir(exist_ok=True)
        target = trash / seen.id
        os.replace(store.calc_dir(seen.id), target)
        if now_is.request_id is not None:
            key = calcs.request_key(now_is.request_id)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(store.root / "requests" / now_is.user / key)
    return target
