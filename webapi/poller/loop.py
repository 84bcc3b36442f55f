"""The poller's one loop, for both protocols: resume what a previous run left, claim a calc, fetch
its inputs, run the allow-listed program, deliver the outcome; retry, give up, stop cleanly.

What differs between our native API and the original MInt protocol is an `Adapter`
(webapi.poller.native, webapi.mint.poller). Every step is recorded in the state dir
(webapi.poller.state) before the next one, so a calc whose program has ended is never run again
and an unsent outcome is sent after a restart.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from webapi.errors import Exit, MalformedAnswer, TransportError
from webapi.fs import disk_full
from webapi.poller.config import CommandSpec, PollerConfig
from webapi.poller.executors import Executor, Outcome, Started, make_executor
from webapi.poller.metrics import PollerMetrics
from webapi.poller.state import CalcRecord, Phase, StateDir
from webapi.poller.workdir import WorkDir

log = logging.getLogger(__name__)

MAX_RUNS = 2  # a program that vanished without a status (host reboot) is started at most twice
FIRST_RETRY_S = 1.0  # the first pause after the server could not be reached


class CalcGone(Exception):
    """The server no longer lets this poller work on the calc (cancelled, lease lost, unknown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ServerRefused(Exception):
    """The server refused this poller itself (its token or its site): retrying cannot help."""

    def __init__(self, message: str, exit_code: int = Exit.REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StateLost(Exception):
    """The poller's own state dir is gone: it cannot record anything, so it must stop."""


class HostTrouble(Exception):
    """This host cannot record or keep a calc now (disk full, files removed under it)."""


class InputsFailed(Exception):
    """The inputs could not be fetched or decoded; the calc ends failed with this reason."""

    def __init__(self, reason: str, record: CalcRecord) -> None:
        super().__init__(reason)
        self.reason, self.record = reason, record


class Watch(Protocol):
    """Keeps a claimed calc alive on the server while it runs, and says when to stop it."""

    reason: str

    @property
    def should_stop(self) -> bool: ...
    def check(self) -> None: ...
    def nudge(self) -> None:
        """Renew (and report progress) soon, from the watch's own thread."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


class NoWatch:
    """For a protocol that has no heartbeat: nothing to renew, never told to stop."""

    reason = ""
    should_stop = False

    def check(self) -> None:
        pass

    def nudge(self) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Adapter(Protocol):
    """One protocol's calls, in the order the loop makes them."""

    protocol: str
    idle_pause: float  # seconds between claims that found nothing (0: the claim long-polls)

    def claim(self) -> CalcRecord | None: ...
    def watch(self, record: CalcRecord, progress: Callable[[], str | None]) -> Watch: ...
    def fetch(self, record: CalcRecord, wd: WorkDir, allowed: Callable[[str], bool]) -> CalcRecord:
        """Inputs into `wd.cwd` (not for a command that is not `allowed`); raise InputsFailed."""

    def before_start(self, record: CalcRecord) -> CalcRecord: ...
    def env(self, record: CalcRecord, wd: WorkDir) -> dict[str, str]: ...
    def outcome(
        self, record: CalcRecord, wd: WorkDir, exit_code: int, reason: str | None
    ) -> CalcRecord:
        """The EXITED record: exit code, reason and the results to deliver."""

    def report(self, record: CalcRecord, wd: WorkDir) -> CalcRecord:
        """Deliver the outcome, saving each acknowledged step; the DONE record."""

    def reattach(self, old: CalcRecord, fresh: CalcRecord) -> CalcRecord: ...
    def confirm(self, record: CalcRecord) -> None:
        """Tell the server this poller has the calc (raise CalcGone if it is not ours)."""

    def unclaim(self, record: CalcRecord, reason: str) -> None:
        """Give a just-claimed calc back (best effort: it must never raise)."""

    def abandon(self, record: CalcRecord, reason: str) -> None:
        """Report the calc failed for a reason of this host, from memory alone (best effort)."""

    def keep_for_reclaim(self, record: CalcRecord) -> bool: ...
    def close(self) -> None: ...


class Poller:
    """Serves one site: `run()` loops until stopped; `run(once=True)` handles at most one calc."""

    def __init__(
        self,
        config: PollerConfig,
        adapter: Adapter,
        state: StateDir,
        *,
        supervise_interval: float = 0.5,
        metrics: PollerMetrics | None = None,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.state = state
        self.poller_id = config.poller_id or socket.gethostname()
        self.supervise_interval = supervise_interval
        self.stop_event = threading.Event()
        # True while a calc is in hand; an idle poller (waiting for a calc) may exit at once.
        self.busy = False
        self._executors: dict[str, Executor] = {}
        self._low_space = ""  # the last "not taking calcs" reason logged
        self._abandoned: set[str] = set()  # calcs this run could not record; not resumed
        self.metrics = metrics

    # -- loop -------------------------------------------------------------------------------
    def run(self, *, once: bool = False) -> int:
        """Serve until `stop()`; returns 0, 254 (refused) or 255 (server unreachable)."""
        try:
            return self._loop(once)
        finally:
            self.adapter.close()
            self.state.release_ownership()

    def _loop(self, once: bool) -> int:
        failures, counted_at = 0, -1e18
        retry = self.config.retry
        pause = min(FIRST_RETRY_S, retry.interval)
        while not self.stop_event.is_set():
            try:
                handled = self.resume_pending()
                if not handled:
                    if not self._fit_to_claim():
                        self.stop_event.wait(retry.interval)
                        continue
                    record = self.claim()
                    failures, pause = 0, min(FIRST_RETRY_S, retry.interval)
                    handled = record is not None and self.process(record)
                if once and (handled or not self.adapter.idle_pause):
                    return Exit.OK
                if not handled and self.adapter.idle_pause:
                    self.stop_event.wait(self.adapter.idle_pause)
            except (TransportError, MalformedAnswer) as exc:
                what = (
                    "unreachable" if isinstance(exc, TransportError) else "answering off-protocol"
                )
                # Tried again soon (1 s, 2 s, … up to the interval) so work resumes within
                # seconds once the server is back; only one failure per interval counts towards
                # giving up, so the patience stays retry.count times retry.interval.
                now = time.monotonic()
                if now - counted_at >= retry.interval * 0.99:
                    failures, counted_at = failures + 1, now
                    if failures >= retry.count:
                        log.error(
                            "giving up: %s %s for %d attempts %g s apart (last error: %s); "
                            "work in progress is kept in %s and resumes at the next start",
                            self.config.url,
                            what,
                            failures,
                            retry.interval,
                            exc,
                            self.state.root,
                        )
                        return Exit.UNREACHABLE
                    log.warning(
                        "server %s (%s); attempt %d of %d, trying again within %g s",
                        what,
                        exc,
                        failures,
                        retry.count,
                        pause,
                    )
                self.stop_event.wait(pause)
                pause = min(pause * 2, retry.interval)
            except ServerRefused as exc:
                log.error("the server refused this poller (site %s): %s", self.config.site, exc)
                return exc.exit_code
            except StateLost as exc:
                log.error("%s; exiting", exc)
                return Exit.USAGE
            except HostTrouble as exc:
                log.error("cannot take calcs now: %s; trying again in %g s", exc, retry.interval)
                self.stop_event.wait(retry.interval)
        return Exit.OK

    def stop(self) -> None:
        self.stop_event.set()

    def _fit_to_claim(self) -> bool:
        """Whether this host can take a calc now: its state dir is there (else StateLost: the
        poller was retired under it) and its disks have room (else wait, saying why once)."""
        if not self.state.root.is_dir():
            raise StateLost(f"the state dir {self.state.root} is gone (was the poller retired?)")
        for path in (self.state.root, self.config.work_base):
            try:
                free = shutil.disk_usage(path if path.exists() else path.parent).free
            except OSError:
                continue
            if free < self.config.min_free_bytes:
                why = (
                    f"not taking calcs: {path} has {free} bytes free, below min_free_bytes "
                    f"{self.config.min_free_bytes}"
                )
                if why != self._low_space:
                    log.warning("%s", why)
                    self._low_space = why
                return False
        if self._low_space:
            log.info("disk space is back; taking calcs again")
            self._low_space = ""
        return True

    def claim(self) -> CalcRecord | None:
        """Take one calc; a calc this poller already ran (its lease ran out meanwhile) gets
        its program or outcome back instead of a second run. A calc that cannot be recorded
        is given back at once rather than held by a poller that cannot work on it."""
        fresh = self.adapter.claim()
        if self.metrics is not None:
            self.metrics.polled(fresh is not None)
        if fresh is None:
            return None
        self.busy = True  # from here a stop signal lets this step finish
        try:
            old = self.state.load(fresh.key)
            if old is not None and old.protocol == fresh.protocol:
                if old.phase in (Phase.RUNNING, Phase.EXITED):
                    log.info("%s was ours before (%s); re-attaching", old.key, old.phase)
                    record = self.state.save(self.adapter.reattach(old, fresh))
                    return self._confirmed(record)
                fresh = fresh.with_(runs=old.runs)
            record = self.state.save(fresh)
        except OSError as exc:
            self.adapter.unclaim(fresh, f"the poller on {self.poller_id} cannot record it: {exc}")
            self.busy = False
            if not self.state.root.is_dir():
                raise StateLost(f"the state dir {self.state.root} is gone") from None
            raise HostTrouble(str(exc)) from None
        return self._confirmed(record)

    def _confirmed(self, record: CalcRecord) -> CalcRecord | None:
        try:
            self.adapter.confirm(record)
        except CalcGone as exc:
            self._gone(record.key, exc.reason)
            self.busy = False
            return None
        return record

    def resume_pending(self) -> bool:
        """Finish what a previous run of the poller left; True if there was anything."""
        handled = False
        for record in self.state.pending(self.adapter.protocol):
            if record.key in self._abandoned:
                continue
            log.info("resuming %s from phase %s", record.key, record.phase)
            handled = self.process(record, resumed=True) or handled
        return handled

    # -- one calc ---------------------------------------------------------------------------
    def process(self, record: CalcRecord, *, resumed: bool = False) -> bool:
        """Drive one calc as far as it goes now (TransportError propagates, state saved).

        Returns False when the calc was left for a later re-claim (see `_gone`).
        """
        watch = self.adapter.watch(record, self._progress(record.key))
        self.busy = True
        try:
            if resumed and record.phase is not Phase.EXITED:
                watch.check()  # is the calc still ours?
                if watch.should_stop:
                    raise CalcGone(watch.reason)
            watch.start()
            if record.phase is Phase.CLAIMED:
                record = self._prepare_and_start(record)
                if record.job_id:
                    # The server learns the batch job id now: a short job could end before
                    # the next regular heartbeat.
                    watch.nudge()
            if record.phase is Phase.RUNNING:
                record = self._supervise(record, watch)
            if record.phase is Phase.EXITED:
                record = self.adapter.report(record, self._wd(record))
        except CalcGone as exc:
            return self._gone(record.key, exc.reason)
        except OSError as exc:
            # This host cannot record the calc's next step (disk full, its files removed): never
            # guess, never run it again; tell the server why, and take up other work.
            self._abandon(record.key, exc)
        finally:
            self.busy = False
            watch.stop()
        return True

    def _abandon(self, key: str, exc: OSError) -> None:
        record = self.state.load(key)
        if record is None:
            return
        if disk_full(exc):
            reason = f"no space left on the external host {self.poller_id}: {exc}"
        else:
            reason = f"the external host {self.poller_id} could not record the calc: {exc}"
        log.error("%s: %s; reporting it failed", key, reason)
        if record.phase is Phase.RUNNING and record.exit_code is None:
            with contextlib.suppress(OSError):
                self._executor(record).stop(self._wd(record), _started(record))
        self.adapter.abandon(record, reason)
        self._abandoned.add(key)
        with contextlib.suppress(OSError):
            self.state.save(record.with_(phase=Phase.DROPPED, reason=reason))
        if not self.state.root.is_dir():
            raise StateLost(f"the state dir {self.state.root} is gone (was the poller retired?)")

    def _gone(self, key: str, reason: str) -> bool:
        """The server took the calc back. If it put it back in the queue while we still hold a
        running program or a recorded outcome, keep them for the next claim (which re-attaches
        instead of running it again); otherwise stop the program and drop the calc."""
        current = self.state.load(key)
        if current is None:
            return True
        if current.phase in (Phase.RUNNING, Phase.EXITED) and self.adapter.keep_for_reclaim(
            current
        ):
            log.info(
                "%s: lease lost (%s) but the calc is still wanted; kept for re-claim", key, reason
            )
            return False
        self._drop(current, reason)
        return True

    def _drop(self, record: CalcRecord, reason: str) -> None:
        if record.phase is Phase.RUNNING and record.exit_code is None:
            self._executor(record).stop(self._wd(record), _started(record))
        log.warning("%s: dropped (%s)", record.key, reason)
        self.state.save(record.with_(phase=Phase.DROPPED, reason=record.reason or reason))

    def _progress(self, key: str) -> Callable[[], str | None]:
        def progress() -> str | None:
            current = self.state.load(key)
            if current is None:
                return None
            # A batch job's id stays in the progress text to the end, so `calcs show` tells the
            # site which job to look at (sacct, qstat) whatever became of the calc.
            job = ""
            if current.job_id:
                spec = self.config.commands.get(current.command)
                kind = spec.executor if spec is not None else "batch"
                job = f" as {kind} job {current.job_id}"
            if current.phase is Phase.RUNNING and current.started:
                running = int(time.time() - current.started)
                return f"running on {self.poller_id}{job} for {running} s"
            return f"{current.phase}{job}"

        return progress

    def _exited(
        self, record: CalcRecord, wd: WorkDir, exit_code: int, reason: str | None
    ) -> CalcRecord:
        exited = self.state.save(self.adapter.outcome(record, wd, exit_code, reason))
        if self.metrics is not None:
            self.metrics.ran(exited.command, exit_code)
            self.metrics.moved(results=sum(f.size for f in exited.results))
        return exited

    def _prepare_and_start(self, record: CalcRecord) -> CalcRecord:
        wd = self._wd(record)
        if record.runs:
            wd.reset()  # the earlier run vanished half-way; start from clean inputs
        wd.create()
        try:
            record = self.state.save(self.adapter.fetch(record, wd, self._allowed))
            if self.metrics is not None:
                self.metrics.moved(inputs=sum(f.size for f in record.inputs))
        except InputsFailed as exc:
            return self._exited(exc.record, wd, Exit.FAILED, exc.reason)
        spec = self.config.commands.get(record.command)
        if spec is None:
            allowed = ", ".join(sorted(self.config.commands)) or "none"
            return self._exited(
                record,
                wd,
                Exit.NOT_ALLOWED,
                f"refused by the poller on {self.poller_id}: command {record.command!r} is not "
                f"on its allow-list (allowed: {allowed})",
            )
        if any("\x00" in a for a in record.args):
            return self._exited(record, wd, Exit.NOT_ALLOWED, "refused by the poller: NUL in args")
        record = self.adapter.before_start(record)
        argv = [*spec.argv, *record.args]
        try:
            started = self._executor(record).start(
                argv, wd, spec.executor_options, env=self.adapter.env(record, wd)
            )
        except OSError as exc:
            return self._exited(record, wd, Exit.CANNOT_START, f"could not start {argv[0]}: {exc}")
        log.info("%s: running %s", record.key, " ".join(argv))
        return self.state.save(
            record.with_(
                phase=Phase.RUNNING,
                pid=started.pid,
                job_id=started.job_id,
                started=time.time(),
                timeout=_min_timeout(spec, record.timeout),
                runs=record.runs + 1,
            )
        )

    def _allowed(self, command: str) -> bool:
        return command in self.config.commands

    def _supervise(self, record: CalcRecord, watch: Watch) -> CalcRecord:
        """Wait for the program; enforce its timeout; stop it on cancel or a lost lease."""
        wd = self._wd(record)
        executor = self._executor(record)
        while True:
            outcome = executor.poll(wd, _started(record))
            if outcome is not None:
                break
            if watch.should_stop and record.kill_reason is None:
                record = self.state.save(record.with_(kill_reason=watch.reason))
                executor.stop(wd, _started(record))
                continue
            if (
                record.timeout
                and record.started
                and record.kill_reason is None
                and time.time() - record.started > record.timeout
            ):
                why = f"timed out after {record.timeout:g} s; the program was stopped"
                record = self.state.save(record.with_(kill_reason=why))
                executor.stop(wd, _started(record))
                continue
            if self.stop_event.wait(self.supervise_interval):
                # The poller is stopping; the program keeps running and is re-attached later.
                return record
        return self._record_outcome(record, outcome, wd, watch)

    def _record_outcome(
        self, record: CalcRecord, outcome: Outcome, wd: WorkDir, watch: Watch
    ) -> CalcRecord:
        reason, exit_code = outcome.reason, outcome.exit_code
        if record.kill_reason is not None:
            if not record.kill_reason.startswith("timed out"):
                # Cancelled or lease lost: the server already knows the calc's fate.
                self._drop(record, record.kill_reason)
                return self.state.load(record.key) or record
            exit_code, reason = Exit.TIMEOUT, record.kill_reason
        elif outcome.lost:
            if record.runs < MAX_RUNS and not watch.should_stop:
                log.warning("%s: %s; starting it again", record.key, outcome.reason)
                restarted = self._prepare_and_start(record.with_(phase=Phase.CLAIMED))
                if restarted.phase is Phase.RUNNING:
                    return self._supervise(restarted, watch)
                return restarted
        elif exit_code != 0 and reason is None:
            reason = f"the program exited with code {exit_code}"
        log.info("%s: exit code %d", record.key, exit_code)
        return self._exited(record, wd, exit_code, reason)

    # -- helpers ----------------------------------------------------------------------------
    def _wd(self, record: CalcRecord) -> WorkDir:
        return WorkDir.for_calc(self.config.work_base, record.key)

    def _executor(self, record: CalcRecord) -> Executor:
        spec = self.config.commands.get(record.command)
        name = spec.executor if spec is not None else "local"
        if name not in self._executors:
            self._executors[name] = make_executor(name, self.config.batch_poll)
        return self._executors[name]


def _started(record: CalcRecord) -> Started:
    return Started(pid=record.pid, job_id=record.job_id)


def _min_timeout(spec: CommandSpec, calc_timeout: float | None) -> float | None:
    limits = [t for t in (spec.timeout, calc_timeout) if t]
    return float(min(limits)) if limits else None
