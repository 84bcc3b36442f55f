"""The poller's loop: claim a calc, fetch inputs, run it, send the outcome, resume after a restart.

Each step is recorded in the local state dir before the server is told (see `webapi/pollstate.py`),
so a calc whose program has ended is never run again, and an unsent outcome is sent on restart.
HTTP retries are urllib3's (`webapi/transport.py`); on top of that the loop gives up after
`retry.count` failed attempts `retry.interval` seconds apart while the server stays unreachable.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from webapi.errors import (
    ApiError,
    ChecksumMismatch,
    Conflict,
    Forbidden,
    NotFound,
    TransportError,
    Unauthorized,
)
from webapi.executors import TIMEOUT_EXIT, Executor, Outcome, Started, make_executor
from webapi.heartbeat import Heartbeat
from webapi.names import safe_join, sha256_file
from webapi.pollconfig import CommandSpec, PollerConfig
from webapi.pollstate import CalcRecord, FileEntry, Phase, StateDir
from webapi.transport import Transport, TransportSettings, quote_name
from webapi.workdir import WorkDir, collect_results

log = logging.getLogger(__name__)

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 254, 255
REFUSED_EXIT = 126  # exit code reported for a command off the poller's allow-list
MAX_RUNS = 2  # a program that vanished without a status (host reboot) is started at most twice


class GaveUp(Exception):
    """The server stayed unreachable for retry.count attempts."""


class Poller:
    """Serves one site: `run()` loops until stopped; `run(once=True)` handles at most one calc."""

    def __init__(self, config: PollerConfig, token: str, *, poll_interval: float = 0.5) -> None:
        self.config = config
        self.poller_id = config.poller_id or socket.gethostname()
        self.state = StateDir(config.state_dir)
        self.poll_interval = poll_interval
        self.stop_event = threading.Event()
        # True while a calc is in hand; an idle poller (waiting in claim) may exit at once.
        self.busy = False
        self._settings = TransportSettings(
            url=config.url,
            token=token,
            ca_file=config.ca_file,
            verify=config.verify,
            read_timeout=config.claim_wait + 15,
            retries=config.http_retries,
            backoff_factor=1.0,
            backoff_max=30.0,
        )
        self.api = Transport(self._settings)
        self._executors: dict[str, Executor] = {}
        # Input manifests of freshly claimed calcs, so fetching them needs no extra GET.
        self._inputs: dict[str, list[FileEntry]] = {}

    # -- loop -------------------------------------------------------------------------------
    def run(self, *, once: bool = False) -> int:
        """Serve until `stop()`; returns 0, or 254 (token refused) / 255 (server unreachable)."""
        try:
            return self._loop(once)
        finally:
            self.api.close()

    def _loop(self, once: bool) -> int:
        failures = 0
        while not self.stop_event.is_set():
            try:
                handled = self.resume_pending()
                if not handled:
                    record = self.claim()
                    failures = 0
                    handled = record is not None and self.process(record)
                if once:
                    return EXIT_OK
            except TransportError as exc:
                failures += 1
                if failures >= self.config.retry.count:
                    log.error(
                        "giving up: %s unreachable for %d attempts %g s apart (last error: %s); "
                        "work in progress is kept in %s and resumes at the next start",
                        self.config.url, failures, self.config.retry.interval, exc,
                        self.config.state_dir,
                    )  # fmt: skip
                    return EXIT_UNREACHABLE
                log.warning(
                    "server unreachable (%s); attempt %d of %d, next in %g s",
                    exc, failures, self.config.retry.count, self.config.retry.interval,
                )  # fmt: skip
                self.stop_event.wait(self.config.retry.interval)
            except (Unauthorized, Forbidden) as exc:
                log.error("the server refused this poller's token for site %s: %s",
                          self.config.site, exc.message)  # fmt: skip
                return EXIT_REFUSED
        return EXIT_OK

    def stop(self) -> None:
        self.stop_event.set()

    def claim(self) -> CalcRecord | None:
        """Long-poll for one queued calc of this site; record it before doing anything else."""
        status, body = self.api.call(
            "POST",
            f"/api/v1/sites/{self.config.site}/claim",
            json={"poller": self.poller_id, "wait": self.config.claim_wait},
            read_timeout=self.config.claim_wait + 15,
        )
        if status == 204 or not isinstance(body, dict):
            return None
        calc, lease = body["calc"], body["lease"]
        fresh = CalcRecord(
            calc_id=str(calc["id"]),
            command=str(calc["command"]),
            args=tuple(str(a) for a in calc.get("args") or ()),
            lease_id=str(lease["id"]),
            heartbeat=float(lease.get("heartbeat") or 60),
            timeout=calc.get("timeout"),
            work_dir=str(WorkDir.for_calc(self.config.work_base, str(calc["id"])).root),
        )
        log.info("claimed %s (%s) under lease %s", fresh.calc_id, fresh.command, fresh.lease_id)
        old = self.state.load(fresh.calc_id)
        if old is not None:
            fresh = fresh.with_(runs=old.runs)
        if old is not None and (old.exit_code is not None or old.phase is Phase.RUNNING):
            # Claimed again after our lease ran out: keep what already happened (a running
            # program or a recorded outcome) under the new lease instead of running it again.
            log.info("%s was ours before (%s); re-attaching", old.calc_id, old.phase)
            phase = Phase.EXITED if old.exit_code is not None else Phase.RUNNING
            record = old.with_(lease_id=fresh.lease_id, heartbeat=fresh.heartbeat, phase=phase,
                               finish_acked=False, uploaded=())  # fmt: skip
            return self.state.save(record)
        self._inputs[fresh.calc_id] = [
            FileEntry(str(i["name"]), int(i["size"]), str(i["sha256"])) for i in calc["inputs"]
        ]
        return self.state.save(fresh)

    def resume_pending(self) -> bool:
        """Finish what a previous run of the poller left; True if there was anything."""
        handled = False
        for record in self.state.pending():
            log.info("resuming %s from phase %s", record.calc_id, record.phase)
            handled = self.process(record, resumed=True) or handled
        return handled

    # -- one calc ---------------------------------------------------------------------------
    def process(self, record: CalcRecord, *, resumed: bool = False) -> bool:
        """Drive one calc to DONE or DROPPED (or raise TransportError with the state saved).

        Returns False when a resumed calc was left for a later re-claim (see `_lease_gone`).
        """
        beat = Heartbeat(
            Transport(dataclasses.replace(self._settings, read_timeout=20.0, retries=2)),
            record.calc_id, record.lease_id, record.heartbeat, self._progress(record),
        )  # fmt: skip
        try:
            if resumed and record.phase is not Phase.EXITED:
                beat.beat()  # is the lease still ours?
                if beat.should_stop:
                    return self._lease_gone(record, beat.reason)
            beat.start()
            self.busy = True
            if record.phase is Phase.CLAIMED:
                record = self._prepare_and_start(record)
            if record.phase is Phase.RUNNING:
                record = self._supervise(record, beat)
            if record.phase is Phase.EXITED:
                record = self._send_outcome(record)
        except (Conflict, NotFound, Forbidden) as exc:
            return self._lease_gone(record, exc.message)
        finally:
            self.busy = False
            beat.stop()
        return True

    def _lease_gone(self, record: CalcRecord, reason: str) -> bool:
        """Our lease is gone. If the server put the calc back in the queue while we still hold a
        running program or a recorded outcome, keep them: the next claim of that calc re-attaches
        instead of running it again. Otherwise (cancelled, finished, deleted) stop and drop."""
        current = self.state.load(record.calc_id) or record
        try:
            _, calc = self.api.call("GET", f"/api/v1/calcs/{record.calc_id}")
            state = str(calc.get("state")) if isinstance(calc, dict) else ""
        except ApiError:
            state = ""
        if state in ("queued", "running") and current.phase in (Phase.RUNNING, Phase.EXITED):
            log.info("%s: lease lost (%s) but the calc is %s; kept for re-claim",
                     record.calc_id, reason, state)  # fmt: skip
            return False
        return self._drop(current, reason)

    def _progress(self, record: CalcRecord) -> Any:
        def progress() -> str | None:
            current = self.state.load(record.calc_id) or record
            if current.phase is Phase.RUNNING and current.started:
                return f"running on {self.poller_id} for {int(time.time() - current.started)} s"
            return str(current.phase)

        return progress

    def _drop(self, record: CalcRecord, reason: str) -> bool:
        current = self.state.load(record.calc_id) or record
        if current.phase is Phase.RUNNING and current.exit_code is None:
            self._executor(current).stop(WorkDir(self._root(current)), _started(current))
        log.warning("%s: dropped (%s)", record.calc_id, reason)
        self.state.save(current.with_(phase=Phase.DROPPED, reason=current.reason or reason))
        return True

    def _finish_now(self, record: CalcRecord, exit_code: int, reason: str) -> CalcRecord:
        return self.state.save(
            record.with_(phase=Phase.EXITED, exit_code=exit_code, reason=reason, results=())
        )

    def _prepare_and_start(self, record: CalcRecord) -> CalcRecord:
        spec = self.config.commands.get(record.command)
        if spec is None:
            allowed = ", ".join(sorted(self.config.commands)) or "none"
            return self._finish_now(
                record, REFUSED_EXIT,
                f"refused by the poller on {self.poller_id}: command {record.command!r} is not "
                f"on its allow-list (allowed: {allowed})",
            )  # fmt: skip
        if any("\x00" in a for a in record.args):
            return self._finish_now(record, REFUSED_EXIT, "refused by the poller: NUL in args")
        wd = WorkDir(self._root(record))
        if record.runs:
            wd.reset()  # the earlier run vanished half-way; start from clean inputs
        wd.create()
        try:
            self._fetch_inputs(record, wd)
        except (ChecksumMismatch, OSError, ApiError) as exc:
            if isinstance(exc, Conflict | NotFound | Forbidden):
                raise
            text = exc.message if isinstance(exc, ApiError) else str(exc)
            return self._finish_now(record, 1, f"could not fetch the inputs: {text}")
        argv = [*spec.argv, *record.args]
        timeout = _min_timeout(spec, record.timeout)
        try:
            started = self._executor(record).start(argv, wd, spec.executor_options)
        except OSError as exc:
            return self._finish_now(record, 127, f"could not start {argv[0]}: {exc}")
        return self.state.save(
            record.with_(phase=Phase.RUNNING, pid=started.pid, job_id=started.job_id,
                         started=time.time(), timeout=timeout, runs=record.runs + 1)
        )  # fmt: skip

    def _fetch_inputs(self, record: CalcRecord, wd: WorkDir) -> None:
        inputs = self._inputs.pop(record.calc_id, None)
        if inputs is None:
            _, calc = self.api.call("GET", f"/api/v1/calcs/{record.calc_id}")
            inputs = [FileEntry(str(i["name"]), int(i["size"]), str(i["sha256"]))
                      for i in calc["inputs"]]  # fmt: skip
        for entry in inputs:
            dest = safe_join(wd.cwd, entry.name)
            if dest.is_file() and dest.stat().st_size == entry.size and \
                    sha256_file(dest) == entry.sha256:  # fmt: skip
                continue
            self.api.download(
                f"/api/v1/calcs/{record.calc_id}/inputs/{quote_name(entry.name)}",
                dest, size=entry.size, sha256=entry.sha256,
            )  # fmt: skip
        (wd.root / "inputs.tsv").write_text(
            "\n".join(f"{e.name}\t{e.size}\t{e.sha256}" for e in inputs), encoding="utf-8"
        )

    def _supervise(self, record: CalcRecord, beat: Heartbeat) -> CalcRecord:
        """Wait for the program; enforce its timeout; stop it on cancel or a lost lease."""
        wd = WorkDir(self._root(record))
        executor = self._executor(record)
        while True:
            outcome = executor.poll(wd, _started(record))
            if outcome is not None:
                break
            if beat.should_stop and record.kill_reason is None:
                record = self.state.save(record.with_(kill_reason=beat.reason))
                executor.stop(wd, _started(record))
                continue
            if record.timeout and record.started and record.kill_reason is None and \
                    time.time() - record.started > record.timeout:  # fmt: skip
                why = f"timed out after {record.timeout:g} s; the program was stopped"
                record = self.state.save(record.with_(kill_reason=why))
                executor.stop(wd, _started(record))
                continue
            if self.stop_event.wait(self.poll_interval):
                # The poller is stopping; the program keeps running and is re-attached later.
                return record
        return self._record_outcome(record, outcome, wd, beat)

    def _record_outcome(
        self, record: CalcRecord, outcome: Outcome, wd: WorkDir, beat: Heartbeat
    ) -> CalcRecord:
        reason, exit_code = outcome.reason, outcome.exit_code
        if record.kill_reason is not None:
            if record.kill_reason.startswith("timed out"):
                exit_code, reason = TIMEOUT_EXIT, record.kill_reason
            else:  # cancelled or lease lost: the server already knows the calc's fate
                self._drop(record, record.kill_reason)
                return self.state.load(record.calc_id) or record
        elif outcome.lost:
            if record.runs < MAX_RUNS and not beat.should_stop:
                log.warning("%s: %s; starting it again", record.calc_id, outcome.reason)
                restarted = self._prepare_and_start(record.with_(phase=Phase.CLAIMED))
                return self._supervise(restarted, beat) if restarted.phase is Phase.RUNNING \
                    else restarted  # fmt: skip
        elif exit_code != 0 and reason is None:
            reason = f"the program exited with code {exit_code}"
        inputs = _read_inputs(wd)
        results = collect_results(wd.cwd, inputs)
        log.info("%s: exit code %d, %d result files", record.calc_id, exit_code, len(results))
        return self.state.save(record.with_(phase=Phase.EXITED, exit_code=exit_code,
                                            reason=reason, results=tuple(results)))  # fmt: skip

    def _send_outcome(self, record: CalcRecord) -> CalcRecord:
        """The outbox: declare the results once, upload each, then mark DONE."""
        base = f"/api/v1/calcs/{record.calc_id}"
        assert record.exit_code is not None
        if not record.finish_acked:
            body: dict[str, Any] = {
                "lease": record.lease_id,
                "exit_code": record.exit_code,
                "results": [dataclasses.asdict(r) for r in record.results],
            }
            if record.reason:
                body["reason"] = record.reason
            self.api.call("POST", f"{base}/finish", json=body)
            record = self.state.save(record.with_(finish_acked=True))
        cwd = WorkDir(self._root(record)).cwd
        for entry in record.results:
            if entry.name in record.uploaded:
                continue
            self.api.upload(
                f"{base}/results/{quote_name(entry.name)}",
                safe_join(cwd, entry.name),
                params={"lease": record.lease_id},
            )
            record = self.state.save(record.with_(uploaded=(*record.uploaded, entry.name)))
        log.info("%s: outcome delivered (exit code %s)", record.calc_id, record.exit_code)
        return self.state.save(record.with_(phase=Phase.DONE))

    # -- helpers ----------------------------------------------------------------------------
    def _root(self, record: CalcRecord) -> Path:
        return WorkDir.for_calc(self.config.work_base, record.calc_id).root

    def _executor(self, record: CalcRecord) -> Executor:
        spec = self.config.commands.get(record.command)
        name = spec.executor if spec is not None else "local"
        if name not in self._executors:
            self._executors[name] = make_executor(name)
        return self._executors[name]


def _started(record: CalcRecord) -> Started:
    return Started(pid=record.pid, job_id=record.job_id)


def _min_timeout(spec: CommandSpec, calc_timeout: float | None) -> float | None:
    limits = [t for t in (spec.timeout, calc_timeout) if t]
    return float(min(limits)) if limits else None


def _read_inputs(wd: WorkDir) -> list[FileEntry]:
    try:
        text = (wd.root / "inputs.tsv").read_text(encoding="utf-8")
    except OSError:
        return []
    entries = []
    for line in text.splitlines():
        name, size, digest = line.split("\t")
        entries.append(FileEntry(name, int(size), digest))
    return entries
