"""The native protocol's adapter for the poller loop: long-poll claims under a lease, a heartbeat
thread while the program runs, inputs and results as streamed files with sha256."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from webapi.contract.calc import (
    MAX_POLLER_COMMANDS,
    MAX_REASON,
    ClaimRequest,
    FileEntry,
    FinishReport,
    Heartbeat,
    Unclaim,
)
from webapi.contract.names import COMMAND_RE, safe_join, sha256_file
from webapi.errors import (
    ApiError,
    ChecksumMismatch,
    Conflict,
    Exit,
    Forbidden,
    MalformedAnswer,
    NotFound,
    TransportError,
    Unauthorized,
)
from webapi.poller.api import PollerApi
from webapi.poller.config import PollerConfig
from webapi.poller.heartbeat import Heartbeat as HeartbeatThread
from webapi.poller.loop import CalcGone, InputsFailed, ServerRefused
from webapi.poller.state import CalcRecord, Phase, StateDir
from webapi.poller.workdir import InputBudget, WorkDir, collect_results
from webapi.transport import TransportSettings

log = logging.getLogger(__name__)
PROTOCOL = "native"
# Answers that mean "this calc is not ours any more" (cancelled, lease taken, calc gone).
_GONE = (Conflict, NotFound, Forbidden)


class NativeAdapter:
    """Talks to our API server's /api/v1 poller routes for one site."""

    protocol = PROTOCOL
    idle_pause = 0.0  # the claim itself waits on the server for up to claim_wait seconds

    def __init__(self, config: PollerConfig, token: str, state: StateDir, poller_id: str) -> None:
        self.config = config
        self.state = state
        self.poller_id = poller_id
        self.settings = TransportSettings(
            url=config.url,
            token=token,
            ca_file=config.ca_file,
            verify=config.verify,
            read_timeout=config.claim_wait + 15,
            retries=config.http_retries,
            backoff_factor=1.0,
            backoff_max=30.0,
            deadline_floor=config.request_deadline,
        )
        self.api = PollerApi(self.settings, config.site)

    def close(self) -> None:
        self.api.close()

    @property
    def _commands(self) -> tuple[str, ...] | None:
        """The command names sent with each claim, so the server hands only calcs this poller
        runs; None (take any) when a name cannot be said in the contract or there are too many,
        since a partial list would strand calcs."""
        names = tuple(sorted(self.config.commands))
        if len(names) > MAX_POLLER_COMMANDS or not all(COMMAND_RE.match(n) for n in names):
            return None
        return names

    def claim(self) -> CalcRecord | None:
        """Long-poll for one queued calc of this site."""
        try:
            grant = self.api.claim(
                ClaimRequest(
                    self.poller_id, self.config.claim_wait, confirm=True, commands=self._commands
                )
            )
        except (Unauthorized, Forbidden) as exc:
            raise ServerRefused(f"the token was refused: {exc.message}") from None
        except ApiError as exc:
            if exc.code == "unknown_site":
                raise ServerRefused(exc.message, Exit.UNKNOWN_SITE) from None
            raise TransportError(f"claim refused: {exc.message}") from None
        if grant is None:
            return None
        calc, lease = grant.calc, grant.lease
        log.info("claimed %s (%s) under lease %s", calc.id, calc.command, lease.id)
        return CalcRecord(
            key=calc.id,
            protocol=PROTOCOL,
            site=calc.site,
            command=calc.command,
            args=calc.args,
            lease_id=lease.id,
            heartbeat=lease.heartbeat,
            timeout=calc.timeout,
            inputs=tuple(dataclasses.replace(f, received=0) for f in calc.inputs),
        )

    def reattach(self, old: CalcRecord, fresh: CalcRecord) -> CalcRecord:
        """Claimed again after our lease ran out: keep the running program or the recorded
        outcome under the new lease; the outcome is declared afresh."""
        return old.with_(lease_id=fresh.lease_id, heartbeat=fresh.heartbeat, acked=())

    def confirm(self, record: CalcRecord) -> None:
        """The claim is recorded here: say so at once, before the short claim lease runs out."""
        try:
            reply = self.api.heartbeat(record.key, Heartbeat(record.lease_id, "claimed"))
        except _GONE as exc:
            raise CalcGone(exc.message) from None
        if reply.cancel:
            raise CalcGone("cancelled by the user")

    def unclaim(self, record: CalcRecord, reason: str) -> None:
        try:
            self.api.unclaim(record.key, Unclaim(record.lease_id, reason[:MAX_REASON]))
            log.warning("%s: given back to the server (%s)", record.key, reason)
        except (ApiError, TransportError, MalformedAnswer) as exc:
            log.warning("%s: could not give it back (%s); its claim times out", record.key, exc)

    def abandon(self, record: CalcRecord, reason: str) -> None:
        if "finish" in record.acked:
            return  # results declared: uploading them later is all that is left
        report = FinishReport(record.lease_id, Exit.HOST_ERROR, (), reason[:MAX_REASON])
        try:
            self.api.finish(record.key, report)
        except (ApiError, TransportError, MalformedAnswer) as exc:
            log.warning("%s: could not report it failed (%s)", record.key, exc)

    def watch(self, record: CalcRecord, progress: Callable[[], str | None]) -> HeartbeatThread:
        api = PollerApi(
            dataclasses.replace(self.settings, read_timeout=20.0, retries=2), self.config.site
        )
        return HeartbeatThread(api, record.key, record.lease_id, record.heartbeat, progress)

    def keep_for_reclaim(self, record: CalcRecord) -> bool:
        """The calc went back to the queue (our lease ran out): keep what we have for the next
        claim; cancelled, finished or deleted: drop it."""
        try:
            state = self.api.calc(record.key).state
        except (ApiError, MalformedAnswer):
            return False
        return state in ("queued", "running")

    def fetch(self, record: CalcRecord, wd: WorkDir, allowed: Callable[[str], bool]) -> CalcRecord:
        if not allowed(record.command):
            return record  # it will be refused: do not download its inputs
        inputs = record.inputs
        if not record.site:  # written by version 0.1, which kept no input list in the record
            inputs = self._calc_inputs(record)
        try:
            budget = InputBudget(wd.cwd, self.config.min_free_bytes, self.config.max_input_bytes)
            budget.check(sum(e.size for e in inputs))
        except ValueError as exc:
            raise InputsFailed(str(exc), record) from None
        try:
            for entry in inputs:
                dest = safe_join(wd.cwd, entry.name)
                if (
                    dest.is_file()
                    and dest.stat().st_size == entry.size
                    and sha256_file(dest) == entry.sha256
                ):
                    continue
                self.api.fetch_input(record.key, entry, dest)
        except _GONE as exc:
            raise CalcGone(exc.message) from None
        except (ChecksumMismatch, OSError, ApiError) as exc:
            text = exc.message if isinstance(exc, ApiError) else str(exc)
            raise InputsFailed(f"could not fetch the inputs: {text}", record) from None
        return record.with_(inputs=inputs)

    def _calc_inputs(self, record: CalcRecord) -> tuple[FileEntry, ...]:
        try:
            return self.api.calc(record.key).inputs
        except _GONE as exc:
            raise CalcGone(exc.message) from None

    def before_start(self, record: CalcRecord) -> CalcRecord:
        return record

    def env(self, record: CalcRecord, wd: WorkDir) -> dict[str, str]:
        return {}

    def outcome(
        self, record: CalcRecord, wd: WorkDir, exit_code: int, reason: str | None
    ) -> CalcRecord:
        """Every new or changed file in the work dir is a result (logs included)."""
        inputs = record.inputs if record.site else _legacy_inputs(wd)
        results = collect_results(wd.cwd, inputs, self.config.never_return)
        log.info("%s: %d result files", record.key, len(results))
        return record.with_(
            phase=Phase.EXITED, exit_code=exit_code, reason=reason, results=tuple(results)
        )

    def report(self, record: CalcRecord, wd: WorkDir) -> CalcRecord:
        """The outbox: declare the results once, upload each, then mark DONE."""
        assert record.exit_code is not None
        try:
            if "finish" not in record.acked:
                report = FinishReport(
                    record.lease_id, record.exit_code, record.results, record.reason
                )
                self.api.finish(record.key, report)
                record = self.state.save(record.ack("finish"))
            for entry in record.results:
                step = f"result:{entry.name}"
                if step in record.acked:
                    continue
                self.api.upload_result(
                    record.key, entry.name, safe_join(wd.cwd, entry.name), record.lease_id
                )
                record = self.state.save(record.ack(step))
        except _GONE as exc:
            raise CalcGone(exc.message) from None
        log.info("%s: outcome delivered (exit code %s)", record.key, record.exit_code)
        return self.state.save(record.with_(phase=Phase.DONE))


def _legacy_inputs(wd: WorkDir) -> tuple[FileEntry, ...]:
    """The input list version 0.1 kept in the work dir (`inputs.tsv`), for its running calcs."""
    try:
        lines = (wd.root / "inputs.tsv").read_text(encoding="utf-8").splitlines()
    except OSError:
        return ()
    entries = []
    for line in lines:
        name, size, digest = line.split("\t")
        entries.append(FileEntry(name, int(size), digest))
    return tuple(entries)
