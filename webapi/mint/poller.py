"""The original protocol's adapter for the poller loop (webapi.poller.loop).

Works against the original server and ours alike: `calc-request` offers a calc every
`poll_interval` seconds; `calc-params` takes it, its inputs decoded into the work dir as they
arrive; the bare `command` is mapped through our allow-list to an argv (never a shell) and run
with `CALC_DIR` set as the original did; then `calc-end`, `send-results` (streamed from the files)
and `end-send`. Each confirmed step is recorded before the next, so none is sent twice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webapi.contract.names import safe_join
from webapi.errors import Exit, TransportError
from webapi.mint.client import MintApi, MintError, mint_settings
from webapi.mint.codec import bodies
from webapi.mint.codec.b64 import Discard, FileSink
from webapi.mint.codec.bodies import FileField, FilePiece, Piece, StreamBody, js
from webapi.mint.codec.mime import sniff
from webapi.mint.codec.wire import JP_STDERR, JP_STDOUT, LOG_NAMES, bare_name
from webapi.poller.config import PollerConfig
from webapi.poller.loop import CalcGone, InputsFailed, NoWatch, ServerRefused
from webapi.poller.state import CalcRecord, Phase, StateDir
from webapi.poller.workdir import InputBudget, WorkDir, never_returns

log = logging.getLogger(__name__)
PROTOCOL = "mint"
# An accept_id names a state file and a work dir: a uuid, or at least a plain short name.
ACCEPT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def _trouble(exc: MintError) -> Exception:
    """Token refusals and unknown sites end the poller; 5xx and garbled answers are retried;
    any other refusal means the server no longer takes this calc from us."""
    if exc.error == "unknown_site":
        return ServerRefused(exc.message, Exit.UNKNOWN_SITE)
    if exc.refused:
        return ServerRefused(exc.message)
    if exc.status >= 500 or exc.status == 0:
        return TransportError(exc.message)
    return CalcGone(exc.message)


class MintAdapter:
    """Talks the original protocol under `<url>/mi-distcomp-api/` for one site."""

    protocol = PROTOCOL

    def __init__(
        self,
        config: PollerConfig,
        token: str,
        state: StateDir,
        poller_id: str,
        *,
        poll_interval: float = 10.0,
    ) -> None:
        self.config = config
        self.state = state
        self.poller_id = poller_id
        self.idle_pause = poll_interval
        self.api = MintApi(
            mint_settings(
                config.url,
                token,
                ca_file=config.ca_file,
                verify=config.verify,
                retries=config.http_retries,
                deadline_floor=config.request_deadline,
            )
        )
        self._last_idle = ""

    def close(self) -> None:
        self.api.close()

    # -- finding work ---------------------------------------------------------------------------
    def claim(self) -> CalcRecord | None:
        """calc-request: the accept_id of a waiting calc (the calc is taken by calc-params)."""
        try:
            head = self.api.call("GET", "calc-request", params={"site_id": self.config.site})
        except MintError as exc:
            if exc.error == "unknown_site" or exc.refused:
                raise _trouble(exc) from None
            if exc.status >= 400 or exc.code is None:
                raise TransportError(exc.message) from None
            if exc.message != self._last_idle:  # say it once, not every poll
                log.info("nothing to do (%s)", exc.message)
                self._last_idle = exc.message
            return None
        accept_id = head.get("accept_id")
        if not isinstance(accept_id, str) or not ACCEPT_ID_RE.match(accept_id):
            # Not a calc this poller can take (nor name a file after): skip the offer and keep
            # serving; exiting would only make a supervisor restart it into the same answer.
            why = f"calc-request offered an unusable accept_id {accept_id!r}; ignored"
            if why != self._last_idle:
                log.error("%s", why)
                self._last_idle = why
            return None
        log.info("calc %s is waiting for site %s", accept_id, self.config.site)
        return CalcRecord(key=accept_id, protocol=PROTOCOL, site=self.config.site)

    def reattach(self, old: CalcRecord, fresh: CalcRecord) -> CalcRecord:
        # A calc is offered again only after the server took it back: its work starts over.
        return fresh.with_(runs=old.runs)

    def watch(self, record: CalcRecord, progress: Callable[[], str | None]) -> NoWatch:
        return NoWatch()  # the original protocol has no heartbeat while a program runs

    def keep_for_reclaim(self, record: CalcRecord) -> bool:
        return False

    def confirm(self, record: CalcRecord) -> None:
        pass  # calc-request only offered the calc; calc-params takes it (and confirms it)

    def unclaim(self, record: CalcRecord, reason: str) -> None:
        pass  # nothing was taken yet (see confirm)

    def abandon(self, record: CalcRecord, reason: str) -> None:
        """End the calc abnormal with `reason` in every result, from memory (no local file is
        read or written: the host's disk may be the trouble)."""
        record = record.with_(verdict="abnormal")
        fields = [
            bodies.missing(n, f"{n}: {reason}") for n in dict.fromkeys([*record.wanted, *LOG_NAMES])
        ]
        head = (
            b'{"accept_id": '
            + js(record.key)
            + b', "site_id": '
            + js(record.site)
            + b', "result_files": '
        )
        try:
            for step, extra in (("calc-params-complete", {}), ("calc-end", {"result": "abnormal"})):
                if step not in record.acked:
                    doc = {"accept_id": record.key, "site_id": record.site, **extra}
                    self.api.call("POST", step, doc=doc)
            if "send-results" not in record.acked:
                body = StreamBody([head, *bodies.result_files(fields), b"}"])
                self.api.call("POST", "send-results", body=body)
            doc = {"accept_id": record.key, "site_id": record.site, "result": "end send"}
            self.api.call("POST", "end-send", doc=doc)
        except (MintError, TransportError) as exc:
            log.warning("%s: could not report it failed (%s)", record.key, exc)

    # -- steps ----------------------------------------------------------------------------------
    def _step(self, record: CalcRecord, name: str, **extra: str) -> CalcRecord:
        """One small POST, once: skipped if already acknowledged; recorded when it is."""
        if name in record.acked:
            return record
        doc = {"accept_id": record.key, "site_id": record.site, **extra}
        try:
            self.api.call("POST", name, doc=doc)
        except MintError as exc:
            raise _trouble(exc) from None
        return self.state.save(record.ack(name))

    def fetch(self, record: CalcRecord, wd: WorkDir, allowed: Callable[[str], bool]) -> CalcRecord:
        """calc-params takes the calc; its inputs go to the work dir as they arrive."""
        if "calc-params" not in record.acked or record.runs:
            wd.reset()  # a fetch cut short leaves partial files: start over
            record = self.state.save(self._fetch(record, wd, allowed))
        return self._step(record, "calc-params-complete")

    def _fetch(self, record: CalcRecord, wd: WorkDir, allowed: Callable[[str], bool]) -> CalcRecord:
        count = 0
        budget = InputBudget(wd.cwd, self.config.min_free_bytes, self.config.max_input_bytes)

        def sink_for(path: tuple[str | int, ...], objects: list[dict[str, Any]]) -> Any:
            nonlocal count
            if len(path) != 4 or path[:2] != ("calc-info", "parameter_files") or path[3] != 0:
                return None
            info = objects[1] if len(objects) > 1 else {}
            if isinstance(info.get("command"), str) and not allowed(info["command"]):
                return Discard()  # it will be refused: do not store its inputs
            name = bare_name(str(path[2]), "parameter file")
            dest = safe_join(wd.cwd, name)
            dest.unlink(missing_ok=True)
            count += 1
            return FileSink(dest, f"parameter file {name!r}", take=budget.take, sync=True)

        params = {"accept_id": record.key, "site_id": record.site}
        try:
            doc = self.api.get_stream("calc-params", params, sink_for)
        except ValueError as exc:  # an unsafe file name or bad base64: nothing of it is kept
            raise InputsFailed(f"calc-params refused: {exc}", record.ack("calc-params")) from None
        except MintError as exc:
            raise _trouble(exc) from None
        info = doc.get("calc-info")
        if not isinstance(info, dict):
            errs = doc.get("errors")
            head = errs[0] if isinstance(errs, list) and errs else {}
            raise CalcGone(f"calc-params: no calc-info in the answer ({head})")
        command = info.get("command")
        wanted = info.get("result_files") or {}
        if not isinstance(command, str) or not isinstance(wanted, dict | list):
            raise InputsFailed(
                "calc-params: the answer has no usable command/result_files",
                record.ack("calc-params"),
            )
        log.info("%s: %s with %d input file(s)", record.key, command, count)
        return record.with_(command=command, wanted=tuple(str(n) for n in wanted)).ack(
            "calc-params"
        )

    def before_start(self, record: CalcRecord) -> CalcRecord:
        return self._step(record, "calc-start")

    def env(self, record: CalcRecord, wd: WorkDir) -> dict[str, str]:
        # The original set CALC_DIR to the calc's dir, where the inputs are (our work/ dir).
        return {"CALC_DIR": str(wd.cwd)}

    def outcome(
        self, record: CalcRecord, wd: WorkDir, exit_code: int, reason: str | None
    ) -> CalcRecord:
        """Decide the verdict once; a failure's reason goes to the end of the stderr result."""
        wd.create()
        wanted = [n for n in record.wanted if n not in LOG_NAMES]
        if exit_code == 0 and wanted and not any(_result_path(wd, n) for n in wanted):
            reason = "the program made none of the requested result files: " + ", ".join(wanted)
        verdict = "calc end" if exit_code == 0 and reason is None else "abnormal"
        if reason:
            with wd.stderr.open("ab") as fh:
                fh.write(f"\nextcomp-poller: {reason}\n".encode())
        log.info(
            "%s: %s (exit code %d%s)",
            record.key,
            verdict,
            exit_code,
            f"; {reason}" if reason else "",
        )
        return record.with_(phase=Phase.EXITED, exit_code=exit_code, reason=reason, verdict=verdict)

    def report(self, record: CalcRecord, wd: WorkDir) -> CalcRecord:
        # A calc that ended before it started (its inputs or command refused) still confirms
        # its parameters before calc-end, as progress never goes back; it is never "started".
        record = self._step(record, "calc-params-complete")
        record = self._step(record, "calc-end", result=record.verdict)
        if "send-results" not in record.acked:
            try:
                self.api.call("POST", "send-results", body=self._results_body(record, wd))
                record = self.state.save(record.ack("send-results"))
            except MintError as exc:
                trouble = _trouble(exc)
                if not isinstance(trouble, CalcGone):
                    raise trouble from None
                # Our server refuses a repeat once it stored the results (the answer to the
                # first send was lost): end-send tells whether the server has them.
                log.warning(
                    "%s: send-results refused (%s); trying end-send", record.key, exc.message
                )
        record = self._step(record, "end-send", result="end send")
        log.info("%s: results delivered (%s)", record.key, record.verdict)
        return self.state.save(record.with_(phase=Phase.DONE))

    def _results_body(self, record: CalcRecord, wd: WorkDir) -> StreamBody:
        """`{accept_id, site_id, result_files: {name: {content, mimetype1, mimetype2}}}`."""
        fields = []
        for name in dict.fromkeys([*record.wanted, *LOG_NAMES]):
            if never_returns(name, self.config.never_return):
                why = f"{name}: withheld (this site never returns it)"
                fields.append(bodies.missing(name, why))
                continue
            path = _result_path(wd, name)
            if path is None:
                fields.append(bodies.missing(name, f"{name}: no such result file in the calc dir"))
                continue
            with path.open("rb") as fh:
                mime1, mime2 = sniff(fh, name)
            fields.append(FileField(name, FilePiece.of_path(path), mime1, mime2))
        head = (
            b'{"accept_id": '
            + js(record.key)
            + b', "site_id": '
            + js(record.site)
            + b', "result_files": '
        )
        pieces: list[Piece] = [head, *bodies.result_files(fields), b"}"]
        return StreamBody(pieces)


def _result_path(wd: WorkDir, name: str) -> Path | None:
    if name == JP_STDOUT:
        return wd.stdout if wd.stdout.is_file() else None
    if name == JP_STDERR:
        return wd.stderr if wd.stderr.is_file() else None
    try:
        path = safe_join(wd.cwd, bare_name(name, "result"))
    except ValueError:
        return None
    return path if path.is_file() and not path.is_symlink() else None
