"""The YAML-files implementation of the storage seam (`JobStore`, in webapi.store.base)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import yaml

from webapi import calcs
from webapi.calcs import Calc
from webapi.contract.calc import CALC_ID_RE, FINAL_STATES, CalcState, FileEntry
from webapi.contract.names import safe_join
from webapi.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    Damaged,
    InsufficientStorage,
    NotFound,
    TooLarge,
)
from webapi.fs import FileLock, OwnerLock, write_yaml_atomic
from webapi.store import finals
from webapi.store.base import (
    Accept,
    ClaimTerms,
    Kind,
    NewCalcRequest,
    SitePolicy,
    StoreCensus,
    StoreEvents,
)
from webapi.store.census import Census, oldest_queued
from webapi.store.files import FileTransfers
from webapi.store.pollers import PollerRegistry, PollerSighting
from webapi.store.records import read_calc
from webapi.store.repair import INDEXES, repair
from webapi.store.retention import PurgeReport, RetentionRule, purge
from webapi.store.tracking import Tracker

log = logging.getLogger(__name__)
FULL_SCAN_S = 600.0  # a full scan of running/ at most this often (see reap)
DEFAULT_MIN_FREE = 64 << 20  # bytes kept free for calc records and logs whatever is reserved

CLAIM_RECHECK_SECONDS = 2.0  # also picks up calcs queued by another process on the same dir


class YamlJobStore:
    """One directory per calc (`calcs/<id>/calc.yaml`, `inputs/`, `results/`) plus indexes.

    Indexes are empty marker files: `queues/<site>/<user>/<queued-µs>-<id>` (claim order) and
    `running/<id>` (the reaper's work list). They are derived data, rebuilt from the calc.yaml
    files on open, so a crash between writing a calc and its index entry is repaired there.

    One process owns a data dir (`.owner`, an flock): only the owner repairs it on open, so a
    repair never races a live upload of another process. `owner=False` opens it beside a
    running owner (the admin commands): no repair, every change under the store lock.
    """

    def __init__(
        self,
        data_dir: Path,
        policy: Callable[[str], SitePolicy] | None = None,
        *,
        owner: bool = True,
        min_free_bytes: int = DEFAULT_MIN_FREE,
    ) -> None:
        self.root = data_dir
        self._policy = policy or (lambda _site: SitePolicy())
        self.min_free_bytes = min_free_bytes
        for sub in ("calcs", *INDEXES, "pollers"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(self.root / ".lock")
        self.owner = OwnerLock(self.root / ".owner")
        self._cond = threading.Condition()
        self._generation = 0
        self._closed = False
        self._last_reap = 0.0
        # Derived from the records and kept by save(): a reap reads only calcs that are due, and
        # a registration knows what uploads in progress have been promised (see Tracker).
        self.tracker = Tracker()
        self._last_full_scan = 0.0
        # Final calcs and their record signatures (owner only), written to finals.json so the
        # next open reads only records written since (see webapi.store.finals).
        self._finals: dict[str, finals.Final] = {}
        self._finals_saved = 0  # self._finals_changes when finals.json was last written
        self._finals_changes = 0
        if owner:
            self.owner.acquire(
                f"data_dir {self.root}",
                "one API server per data_dir: stop the other `extcomp-api serve`, or give this "
                "one its own data_dir",
            )
            with self.lock():
                known = finals.load(self.root)
                opened = repair(self.root, known)
                self.tracker.load(opened.calcs)
                self._finals = opened.finals
                if self._finals != known:  # after a clean stop usually equal: nothing to write
                    finals.save(self.root, self._finals)
        self.pollers = PollerRegistry(self.root / "pollers")
        self.files = FileTransfers(self)
        self._listing: dict[str, tuple[tuple[int, int, int], Calc]] = {}
        self._listing_lock = threading.Lock()
        self._listeners: list[StoreEvents] = []
        # The census counts the final calcs finals.json vouches for without parsing them: the
        # owner's in-memory index, or (beside a running owner) the file as last written.
        self._census = Census(self.root / "calcs", self.known_finals)
        self._finals_file: dict[str, finals.Final] | None = None
        self._census_lock = threading.Lock()

    @classmethod
    def beside_server(
        cls, data_dir: Path, policy: Callable[[str], SitePolicy] | None = None
    ) -> YamlJobStore:
        """For an admin command: the owner if no server runs, else alongside the running one."""
        try:
            return cls(data_dir, policy)
        except ConfigError:
            return cls(data_dir, policy, owner=False)

    # -- low level ----------------------------------------------------------------------------
    def calc_dir(self, calc_id: str) -> Path:
        if not CALC_ID_RE.match(calc_id):
            raise NotFound(f"no calc {calc_id!r} (ids look like c-<32 hex digits>)")
        return self.root / "calcs" / calc_id

    def read(self, calc_id: str) -> Calc:
        path = self.calc_dir(calc_id) / "calc.yaml"
        try:
            return read_calc(path)
        except FileNotFoundError:
            raise NotFound(f"no calc {calc_id!r}") from None

    def save(self, old: Calc | None, new: Calc) -> Calc:
        """Write calc.yaml atomically, then bring the indexes in line. Call under self.lock."""
        if old == new:
            return new
        new = calcs.with_history(old, new)
        write_yaml_atomic(self.calc_dir(new.id) / "calc.yaml", new.to_record())
        was_q = old is not None and old.state is CalcState.QUEUED
        is_q = new.state is CalcState.QUEUED
        if (
            was_q
            and old is not None
            and (not is_q or calcs.queue_entry(old) != calcs.queue_entry(new))
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / "queues" / old.site / old.user / calcs.queue_entry(old))
        if is_q and (not was_q or old is None or calcs.queue_entry(old) != calcs.queue_entry(new)):
            qdir = self.root / "queues" / new.site / new.user
            qdir.mkdir(parents=True, exist_ok=True)
            (qdir / calcs.queue_entry(new)).touch()
            self._notify()
        self.tracker.update(new)
        for state, index in ((CalcState.RUNNING, "running"), (CalcState.REGISTERED, "registered")):
            if new.state is state:
                (self.root / index / new.id).touch()
            elif old is not None and old.state is state:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.root / index / new.id)
        if self.owner.held:
            self._note_final(new)
        if new.state in FINAL_STATES and (old is None or old.state not in FINAL_STATES):
            # Listings by a non-final state cached it; none will again. Without this the cache
            # kept every calc ever queued (only a full listing prunes it).
            with self._listing_lock:
                self._listing.pop(new.id, None)
        return new

    def _note_final(self, calc: Calc) -> None:
        """Keep the finals index in line with a calc just written (under the lock)."""
        if calc.state in FINAL_STATES:
            sig = finals.signature(self.calc_dir(calc.id))
            if sig is not None:
                self._finals[calc.id] = finals.of_calc(sig, calc)
                self._finals_changes += 1
        elif self._finals.pop(calc.id, None) is not None:
            self._finals_changes += 1

    def save_finals(self) -> None:
        """Write finals.json if calcs ended (or were requeued) since it was last written."""
        if not self.owner.held:
            return
        with self.lock():
            if self._finals_changes == self._finals_saved:
                return
            snapshot, changes = dict(self._finals), self._finals_changes
        finals.save(self.root, snapshot)  # outside the lock: claims need not wait for it
        self._finals_saved = changes

    def _notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def _expire_if_due(self, calc: Calc) -> Calc:
        """Lazy lease expiry: call under self.lock with a freshly read calc."""
        now = time.time()
        if calcs.lease_expired(calc, now):
            max_attempts = self._policy(calc.site).max_attempts
            new = calcs.expire_lease(calc, max_attempts=max_attempts, now=now)
            log.info("calc %s: lease expired → %s (%s)", calc.id, new.state, new.reason)
            saved = self.save(calc, new)
            for listener in self._listeners:
                listener.lease_expired(calc.site, new.state is CalcState.QUEUED)
            return saved
        return calc

    def load(self, calc_id: str) -> Calc:
        """Read a calc under the lock, applying a due lease expiry."""
        return self._expire_if_due(self.read(calc_id))

    # -- calcs --------------------------------------------------------------------------------
    def check_space(self, need: int, what: str) -> None:
        """Refuse `need` more bytes unless they fit beside what uploads in progress were promised
        and the reserve: concurrent uploads can then never overfill the disk."""
        free = shutil.disk_usage(self.root).free
        reserved = self.tracker.reserved()
        room = free - reserved - self.min_free_bytes
        if need > room:
            raise InsufficientStorage(
                f"{what} need {need} bytes, but the server can take {max(room, 0)} now "
                f"({free} free, {reserved} promised to uploads in progress, "
                f"{self.min_free_bytes} kept in reserve); try again later or ask its operator"
            )

    def create(self, req: NewCalcRequest, *, quota_bytes: int) -> tuple[Calc, bool]:
        total = sum(f.size for f in req.inputs)
        if quota_bytes and total > quota_bytes:
            raise TooLarge(f"inputs total {total} bytes, over the quota of {quota_bytes} bytes")
        with self.lock():
            req_file = None
            if req.request_id is not None:
                key = calcs.request_key(req.request_id)
                req_file = self.root / "requests" / req.user / key
                with contextlib.suppress(FileNotFoundError):
                    return self.load(req_file.read_text().strip()), False
            self.check_space(total, "the inputs")
            calc = calcs.new_calc(
                calc_id="c-" + uuid.uuid4().hex,
                user=req.user,
                site=req.site,
                command=req.command,
                args=req.args,
                inputs=req.inputs,
                timeout=req.timeout,
                request_id=req.request_id,
                now=time.time(),
                held=req.held,
                meta=req.meta,
            )
            self.calc_dir(calc.id).mkdir()
            calc = self.save(None, calc)
            if req_file is not None:
                req_file.parent.mkdir(parents=True, exist_ok=True)
                req_file.write_text(calc.id)
        log.info("calc %s: registered by %s for %s/%s", calc.id, req.user, req.site, req.command)
        return calc, True

    def get(self, calc_id: str) -> Calc:
        calc = self.read(calc_id)
        if calcs.lease_expired(calc, time.time()):
            with self.lock():
                calc = self.load(calc_id)
        return calc

    def _listed(self, calc_id: str) -> Calc:
        """A calc for a listing: parsed again only when its calc.yaml changed (every write
        replaces the file, so its inode, size or mtime changes), with libyaml when present.
        Listings (the status page reloads them every few seconds) then cost a stat per calc,
        not a YAML parse; updates never use this cache, they read the file under the lock."""
        path = self.calc_dir(calc_id) / "calc.yaml"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFound(f"no calc {calc_id!r}") from None
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._listing_lock:
            hit = self._listing.get(calc_id)
        if hit is not None and hit[0] == sig:
            return hit[1]
        calc = read_calc(path)
        with self._listing_lock:
            self._listing[calc_id] = (sig, calc)
        return calc

    def _indexed(self, state: CalcState, user: str | None, site: str | None) -> list[str] | None:
        """Ids of calcs the marker index says are in `state` (a non-final one), narrowed by
        user and site where the index is laid out by them; None if it cannot say (a final
        state, or the index dir is missing: then every record is read). Candidates only: the
        caller checks each record, so a stale marker never shows a calc in the wrong state."""
        if state is CalcState.QUEUED:
            base = self.root / "queues"
            if not base.is_dir():
                return None
            ids: list[str] = []
            sites = [site] if site is not None else os.listdir(base)
            for s in sites:
                users = [user] if user is not None else _listdir(base / s)
                for u in users:
                    ids.extend(e.partition("-")[2] for e in _listdir(base / s / u))
            return ids
        index = {CalcState.RUNNING: "running", CalcState.REGISTERED: "registered"}.get(state)
        if index is None or not (self.root / index).is_dir():
            return None
        return _listdir(self.root / index)

    def list_calcs(
        self, *, user: str | None, state: CalcState | None, site: str | None
    ) -> list[Calc]:
        out = []
        indexed = None if state is None else self._indexed(state, user, site)
        if indexed is not None:
            # A non-final state: only the calcs the markers name are read (a few, whatever the
            # store's history); the listing cache is pruned by full listings only.
            entries = sorted(set(indexed))
        else:
            entries = sorted(os.listdir(self.root / "calcs"))
            with self._listing_lock:
                for gone in set(self._listing) - set(entries):
                    del self._listing[gone]
        # A final calc the finals index vouches for (its record unchanged since) is skipped
        # without a parse when its state, user or site cannot match: a listing of failed calcs,
        # or a user's own, then parses those, not the whole history.
        filtered = state is not None or user is not None or site is not None
        known = self.known_finals() if indexed is None and filtered else {}
        for entry in entries:
            final = finals.vouched(self.root, known, entry) if known else None
            if final is not None and not _may_match(final, user, state, site):
                continue
            try:
                calc = self._listed(entry)
            except (NotFound, OSError, yaml.YAMLError, TypeError, ValueError):
                continue
            if user is not None and calc.user != user:
                continue
            if (state is None or calc.state is state) and (site is None or calc.site == site):
                out.append(calc)
        out.sort(key=lambda c: c.created)
        return out

    def cancel(self, calc_id: str, reason: str) -> Calc:
        with self.lock():
            calc = self.load(calc_id)
            return self.save(calc, calcs.cancel(calc, reason=reason, now=time.time()))

    def requeue(self, calc_id: str) -> Calc:
        with self.lock():
            calc = self.load(calc_id)
            new = calcs.requeue(calc, now=time.time())
            shutil.rmtree(self.calc_dir(calc_id) / "results", ignore_errors=True)
            shutil.rmtree(self.calc_dir(calc_id) / "parts" / "results", ignore_errors=True)
            saved = self.save(calc, new)
        self._tell_requeued(calc.site, "admin")
        return saved

    def release(self, calc_id: str) -> Calc:
        with self.lock():
            calc = self.load(calc_id)
            return self.save(calc, calcs.release(calc, now=time.time()))

    def fail(self, calc_id: str, reason: str) -> Calc:
        with self.lock():
            calc = self.load(calc_id)
            return self.save(calc, calcs.fail(calc, reason=reason, now=time.time()))

    # -- files (streaming lives in store_files) -----------------------------------------------
    def write_file(
        self,
        calc_id: str,
        kind: Kind,
        name: str,
        offset: int,
        body: BinaryIO,
        length: int | None,
        lease_id: str | None,
    ) -> tuple[Calc, FileEntry]:
        return self.files.write(calc_id, kind, name, offset, body, length, lease_id)

    def adopt_file(
        self,
        calc_id: str,
        kind: Kind,
        name: str,
        source: Path,
        sha256: str,
        lease_id: str | None,
    ) -> tuple[Calc, FileEntry]:
        return self.files.adopt(calc_id, kind, name, source, sha256, lease_id)

    def open_file(self, calc_id: str, kind: Kind, name: str) -> tuple[BinaryIO, int]:
        calc = self.get(calc_id)
        entry = calc.input(name) if kind == "inputs" else calc.result(name)
        if not entry.complete:
            raise Conflict(
                f"{kind[:-1]} {name!r} of calc {calc_id} is not fully uploaded "
                f"({entry.received} of {entry.size} bytes)"
            )
        if entry.size == 0:  # declared empty: never uploaded, nothing on disk
            return io.BytesIO(b""), 0
        path = safe_join(self.calc_dir(calc_id), f"{kind}/{name}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if not self.calc_dir(calc_id).exists():  # removed by retention since it was read
                raise NotFound(f"no calc {calc_id!r} (removed)") from None
            raise Damaged(f"{kind[:-1]} {name!r} of calc {calc_id} is missing on disk") from None
        except OSError:
            raise BadRequest(f"{kind[:-1]} {name!r} cannot be opened (symbolic link?)") from None
        size = os.fstat(fd).st_size
        if size != entry.size:
            # Never answer a short body under the recorded length: the reader would wait for
            # bytes that do not exist.
            os.close(fd)
            log.error(
                "calc %s: %s %r has %d bytes on disk, %d recorded",
                calc_id,
                kind[:-1],
                name,
                size,
                entry.size,
            )
            raise Damaged(
                f"{kind[:-1]} {name!r} of calc {calc_id} is damaged on the server "
                f"({size} bytes on disk, {entry.size} recorded); its operator has been told"
            )
        return os.fdopen(fd, "rb"), entry.size

    # -- poller side --------------------------------------------------------------------------
    def poller_seen(self, site: str) -> tuple[str, float] | None:
        return self.pollers.last(site)

    def poller_users(self, site: str) -> dict[str, float]:
        return self.pollers.users(site)

    def poller_sightings(self, site: str) -> list[PollerSighting]:
        return self.pollers.sightings(site)

    def _queued(self, site: str, user: str, accept: Accept | None) -> Calc | None:
        """The oldest queued calc of site/user that `accept`s; drops stale markers on the way."""
        qdir = self.root / "queues" / site / user
        try:
            entries = sorted(os.listdir(qdir))
        except FileNotFoundError:
            return None
        for entry in entries:
            calc_id = entry.partition("-")[2]
            try:
                calc = self.read(calc_id)
            except NotFound:
                calc = None
            if (
                calc is None
                or calc.state is not CalcState.QUEUED
                or calcs.queue_entry(calc) != entry
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(qdir / entry)  # stale marker (e.g. left by a crash)
                continue
            if accept is None or accept(calc):
                return calc
        return None

    def peek(self, *, site: str, user: str, poller: str, accept: Accept) -> Calc | None:
        """The calc `claim` would take now, without taking it (the original protocol's offer)."""
        with self.lock():
            self.pollers.note(site, poller, user)
            return self._queued(site, user, accept)

    def _try_claim(self, site: str, user: str, poller: str, terms: ClaimTerms) -> Calc | None:
        calc = self._queued(site, user, terms.fits)
        if calc is None:
            return None
        now = time.time()
        if terms.confirm_seconds is not None:
            expires, confirmed = now + terms.confirm_seconds, False
        else:
            lease = terms.lease_seconds
            expires = now + (self._policy(site).lease_seconds if lease is None else lease)
            confirmed = True
        new = calcs.claim(
            calc,
            lease_id="l-" + secrets.token_hex(12),
            poller=poller,
            expires=expires,
            now=now,
            confirmed=confirmed,
        )
        log.info("calc %s: claimed by poller %r of %s", calc.id, poller, user)
        return self.save(calc, new)

    def claim(
        self, *, site: str, user: str, poller: str, wait: float, terms: ClaimTerms | None = None
    ) -> Calc | None:
        """Claim the oldest queued calc of `user` for `site` that `terms.accept`s, waiting up to
        `wait` seconds; nothing is taken once `terms.still_there()` says the asker has gone."""
        started = time.monotonic()
        calc = self._claim(site, user, poller, wait, terms or ClaimTerms())
        seconds = time.monotonic() - started
        for listener in self._listeners:
            listener.claim_answered(site, seconds, calc)
        return calc

    def _claim(
        self, site: str, user: str, poller: str, wait: float, terms: ClaimTerms
    ) -> Calc | None:
        deadline = time.monotonic() + wait
        if time.time() - self._last_reap > 1.0:
            self.reap()
        while True:
            with self._cond:
                generation = self._generation
            if not terms.still_there():
                log.info("claim of poller %r for %s: the poller left; nothing taken", poller, site)
                return None
            with self.lock():
                self.pollers.note(site, poller, user, terms.agent, terms.commands)
                calc = self._try_claim(site, user, poller, terms)
            if calc is not None:
                return calc
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return None
            with self._cond:
                if self._generation == generation and not self._closed:
                    self._cond.wait(min(remaining, CLAIM_RECHECK_SECONDS))

    def heartbeat(
        self,
        calc_id: str,
        lease_id: str,
        progress: str | None,
        lease_seconds: float | None = None,
    ) -> Calc:
        with self.lock():
            calc = self.load(calc_id)
            if calc.lease is not None:
                self.pollers.note(calc.site, calc.lease.poller, calc.user)
            now = time.time()
            if lease_seconds is None:
                lease_seconds = self._policy(calc.site).lease_seconds
            expires = now + lease_seconds
            new = calcs.heartbeat(
                calc, lease_id=lease_id, expires=expires, progress=progress, now=now
            )
            return self.save(calc, new)

    def unclaim(self, calc_id: str, lease_id: str, reason: str) -> Calc:
        """The poller gives the calc back before it ran anything: queued again, no attempt lost."""
        with self.lock():
            calc = self.load(calc_id)
            new = calcs.unclaim(calc, lease_id=lease_id, reason=reason, now=time.time())
            if new is not calc:
                shutil.rmtree(self.calc_dir(calc_id) / "parts" / "results", ignore_errors=True)
                log.info("calc %s: %s", calc_id, new.reason)
            saved = self.save(calc, new)
        if new is not calc and new.state is CalcState.QUEUED:
            self._tell_requeued(calc.site, "unclaim")
        return saved

    def finish(
        self,
        calc_id: str,
        *,
        lease_id: str,
        exit_code: int,
        reason: str | None,
        results: tuple[FileEntry, ...],
        quota_bytes: int,
        missing: dict[str, str] | None = None,
    ) -> Calc:
        total = sum(f.size for f in results)
        if quota_bytes and total > quota_bytes:
            raise TooLarge(f"results total {total} bytes, over the quota of {quota_bytes} bytes")
        with self.lock():
            calc = self.load(calc_id)
            if not calc.results_declared:
                self.check_space(total, "the results")
            new = calcs.finish(
                calc,
                lease_id=lease_id,
                exit_code=exit_code,
                reason=reason,
                results=results,
                now=time.time(),
                missing=missing,
            )
            return self.save(calc, new)

    def reap(self) -> int:
        """Expire overdue leases and queued calcs; return how many calcs changed."""
        self._last_reap = now = time.time()
        changed = 0
        with self.lock():
            # Every running calc on the first reap and now and then (another process sharing the
            # data dir may have made leases); otherwise only those the index says are due.
            lease_due = self.tracker.lease_due
            if now - self._last_full_scan > FULL_SCAN_S:
                self._last_full_scan = now
                due = os.listdir(self.root / "running")
            else:
                due = [cid for cid, expires in lease_due.items() if expires <= now]
            for calc_id in due:
                try:
                    calc = self.read(calc_id)
                except NotFound:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.root / "running" / calc_id)
                    self.tracker.forget(calc_id)
                    continue
                self.tracker.update(calc)
                changed += self._expire_if_due(calc) is not calc
            full_scan = self._last_full_scan == now
            changed += self._expire_registered(time.time())
            now = time.time()
            for qdir in (self.root / "queues").glob("*/*"):
                expiry = self._policy(qdir.parent.name).queued_expiry_seconds
                for entry in os.listdir(qdir):
                    waited = now - int(entry.partition("-")[0]) / 1e6
                    if waited <= expiry:
                        continue
                    with contextlib.suppress(NotFound):
                        calc = self.read(entry.partition("-")[2])
                        if calc.state is CalcState.QUEUED:
                            self.save(calc, calcs.expire_queued(calc, now=now, waited=waited))
                            changed += 1
        if full_scan:
            self.save_finals()  # now and then, so a crash costs the next open little
        return changed

    def _expire_registered(self, now: float) -> int:
        """Fail registrations that saw no upload (or, held, no release) for the site's expiry:
        their client is gone; their partial files are removed. Call under the lock."""
        changed = 0
        for calc_id, (site, active) in list(self.tracker.registered.items()):
            expiry = self._policy(site).registered_expiry_seconds
            if now - active <= expiry:
                continue
            try:
                calc = self.read(calc_id)
            except NotFound:
                self.tracker.forget(calc_id)
                continue
            if calc.state is not CalcState.REGISTERED or now - calc.updated <= expiry:
                self.tracker.update(calc)  # changed meanwhile (e.g. by another process)
                continue
            idle = now - calc.updated
            new = self.save(calc, calcs.expire_registered(calc, now=now, idle=idle))
            shutil.rmtree(self.calc_dir(calc_id) / "parts", ignore_errors=True)
            log.info("calc %s: %s", calc_id, new.reason)
            changed += 1
        return changed

    # -- listeners and metrics ----------------------------------------------------------------
    def subscribe(self, events: StoreEvents) -> None:
        """Tell `events` of claims, lease expiries and requeues from now on."""
        self._listeners.append(events)

    def _tell_requeued(self, site: str, cause: str) -> None:
        for listener in self._listeners:
            listener.requeued(site, cause)

    def census(self) -> StoreCensus:
        """Calcs by (site, state) and the oldest queued time per site, for a metrics scrape."""
        with self._census_lock:  # two scrapes at once share one pass over the records
            by_user = self._census.count_by_user()
        counts: Counter[tuple[str, str]] = Counter()
        for (site, state, _user), n in by_user.items():
            counts[site, state] += n
        return StoreCensus(dict(counts), oldest_queued(self.root / "queues"), dict(by_user))

    def known_finals(self) -> Mapping[str, finals.Final]:
        """The finals index the census may take (site, state, user) from; every entry is
        checked against its record's signature before use, so a stale one is only a miss."""
        if self.owner.held:
            return self._finals
        if self._finals_file is None:
            self._finals_file = finals.load(self.root)
        return self._finals_file

    def purge(
        self, rule_for: Callable[[str], RetentionRule], *, dry_run: bool = False
    ) -> PurgeReport:
        """Remove final calcs past their site's retention rule (see webapi.store.retention)."""
        report = purge(self, rule_for, dry_run=dry_run)
        if self.owner.held and not dry_run and report.calcs:
            with self.lock():  # the next finals.json need not name calcs that are gone
                for gone in report.calcs:
                    self._finals.pop(gone.id, None)
                self._finals_changes += 1
        return report

    def close(self) -> None:
        """Wake every waiting claim so the server can stop promptly; give up the data dir."""
        self._closed = True
        self._notify()
        try:
            self.save_finals()
        except OSError as exc:  # e.g. the data dir's disk is gone: stopping must still work
            log.warning("store: finals index of %s not written on close (%s)", self.root, exc)
        self.owner.release()


def _may_match(
    final: finals.Final, user: str | None, state: CalcState | None, site: str | None
) -> bool:
    """Whether a final calc, as its index entry describes it, can pass a listing's filters."""
    summary = final.summary
    if summary is None:  # a version 1 entry: only the user is known
        return user is None or final.user == user
    return (
        (user is None or final.user == user)
        and (state is None or summary[1] == str(state))
        and (site is None or summary[0] == site)
    )


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
