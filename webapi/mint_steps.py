"""One calc of the mint-mode poller, step by step: fetch, start, supervise, report.

`calc-params` decodes the inputs into the work dir as they arrive; the bare `command` is mapped
through our allow-list to an argv (never a shell) and run with `CALC_DIR` set as the original
did; then `calc-end`, `send-results` (streamed from the files) and `end-send`, without sleeping
between steps. Every step is recorded in `<state_dir>/mint/<accept_id>.json` before the next one,
so a restarted poller re-attaches to a running program or resends an unacknowledged outcome; a
calc whose program has ended is never run again. The loop that finds calcs is `webapi.mint_poller`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from webapi.executors import TIMEOUT_EXIT, Executor, LocalExecutor, Started, make_executor
from webapi.mint.mime import sniff
from webapi.mintproto import (
    JP_STDERR,
    JP_STDOUT,
    Base64FileSink,
    DiscardSink,
    FileB64,
    MintApi,
    MintError,
    Piece,
    StreamBody,
    bare_name,
    js,
)
from webapi.names import safe_join
from webapi.pollconfig import PollerConfig
from webapi.pollstate import Phase, write_atomic
from webapi.workdir import WorkDir

# The loop's logger name: the poller's log lines stay under one name for operators' filters.
log = logging.getLogger("webapi.mint_poller")

REFUSED_EXIT = 126  # recorded for a command off the poller's allow-list (as the native poller)
LOGS = (JP_STDOUT, JP_STDERR)


@dataclass(frozen=True, slots=True)
class MintRecord:
    """What this poller knows about one calc; `acked` lists the steps the server confirmed."""

    accept_id: str
    site: str
    phase: Phase = Phase.CLAIMED
    command: str = ""
    wanted: tuple[str, ...] = ()  # result names asked for at registration
    acked: tuple[str, ...] = ()
    pid: int | None = None
    job_id: str | None = None
    started: float | None = None
    timeout: float | None = None
    kill_reason: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    result: str = ""  # "calc end" or "abnormal", decided once when the program has ended
    updated: float = field(default_factory=time.time)

    def with_(self, **changes: Any) -> MintRecord:
        return replace(self, updated=time.time(), **changes)

    def ack(self, step: str) -> MintRecord:
        return self.with_(acked=(*self.acked, step))


class MintState:
    """`<root>/<accept_id>.json`, written atomically; the poller is the only writer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, accept_id: str) -> Path:
        WorkDir.for_calc(self.root, accept_id)  # the same plain-name rule as work dirs
        return self.root / f"{accept_id}.json"

    def save(self, rec: MintRecord) -> MintRecord:
        data = asdict(rec)
        data["phase"] = str(rec.phase)
        write_atomic(self._path(rec.accept_id), json.dumps(data, ensure_ascii=False, indent=1))
        return rec

    def pending(self) -> list[MintRecord]:
        found = []
        for path in self.root.glob("*.json"):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                data["phase"] = Phase(data["phase"])
                data["wanted"], data["acked"] = tuple(data["wanted"]), tuple(data["acked"])
                rec = MintRecord(**data)
            except (OSError, ValueError, TypeError, KeyError):
                log.warning("unreadable state record %s; skipped", path)
                continue
            if rec.phase not in (Phase.DONE, Phase.DROPPED):
                found.append(rec)
        return sorted(found, key=lambda r: r.updated)


class CalcGone(Exception):
    """The server no longer takes this calc (cancelled, unknown, not ours): drop it."""


class CalcSteps:
    """The steps of one calc at a time for the loop (`process`); state goes to `state` first."""

    def __init__(
        self, config: PollerConfig, api: MintApi, state: MintState, *, poller_id: str,
        stop_event: threading.Event,
    ) -> None:  # fmt: skip
        self.config, self.api, self.state = config, api, state
        self.poller_id = poller_id
        self.stop_event = stop_event  # set: stop supervising, leave the program running
        self._executors: dict[str, Executor] = {}

    def process(self, rec: MintRecord) -> None:
        """Drive one calc as far as it goes now; transport trouble propagates (state is kept)."""
        try:
            if rec.phase is Phase.CLAIMED:
                rec = self._prepare_and_start(rec)
            if rec.phase is Phase.RUNNING:
                rec = self._supervise(rec)
            if rec.phase is Phase.EXITED:
                rec = self._report(rec)
        except CalcGone as exc:
            self._drop(rec, str(exc))

    def _step(self, rec: MintRecord, name: str, **extra: str) -> MintRecord:
        """One small POST, once: skipped if already acknowledged; recorded when it is."""
        if name in rec.acked:
            return rec
        doc = {"accept_id": rec.accept_id, "site_id": rec.site, **extra}
        try:
            self.api.call("POST", name, doc=doc)
        except MintError as exc:
            _raise_if_server_trouble(exc)
            raise CalcGone(exc.message) from None
        return self.state.save(rec.ack(name))

    def _wd(self, rec: MintRecord) -> WorkDir:
        return WorkDir.for_calc(self.config.work_base, rec.accept_id)

    def _prepare_and_start(self, rec: MintRecord) -> MintRecord:
        wd = self._wd(rec)
        if "calc-params" not in rec.acked:
            wd.reset()  # a fetch cut short leaves partial files: start over
            rec = self._fetch(rec, wd)
            if rec.phase is Phase.EXITED:
                return rec
        rec = self._step(rec, "calc-params-complete")
        spec = self.config.commands.get(rec.command)
        if spec is None:
            allowed = ", ".join(sorted(self.config.commands)) or "none"
            return self._exited(rec, REFUSED_EXIT, (
                f"refused by the poller on {self.poller_id}: command {rec.command!r} is not "
                f"on its allow-list (allowed: {allowed})"))  # fmt: skip
        rec = self._step(rec, "calc-start")
        # The original set CALC_DIR to the calc's dir, where the inputs are (our work/ dir).
        calc_dir = str(wd.cwd)
        executor = self._executor(spec.executor)
        try:
            if isinstance(executor, LocalExecutor):
                started = executor.start(spec.argv, wd, spec.executor_options,
                                         env={"CALC_DIR": calc_dir})  # fmt: skip
            else:
                export = [f"--export=ALL,CALC_DIR={calc_dir}"] if spec.executor == "slurm" \
                    else ["-v", f"CALC_DIR={calc_dir}"]  # fmt: skip
                started = executor.start(spec.argv, wd, [*spec.executor_options, *export])
        except OSError as exc:
            return self._exited(rec, 127, f"could not start {spec.argv[0]}: {exc}")
        log.info("%s: running %s", rec.accept_id, " ".join(spec.argv))
        return self.state.save(rec.with_(phase=Phase.RUNNING, pid=started.pid,
                                         job_id=started.job_id, started=time.time(),
                                         timeout=spec.timeout))  # fmt: skip

    def _fetch(self, rec: MintRecord, wd: WorkDir) -> MintRecord:
        """calc-params: the inputs go to the work dir as they arrive (none for a refused one)."""
        count = [0]

        def sink_for(path: tuple[str | int, ...], objects: list[dict[str, Any]]) -> Any:
            if len(path) != 4 or path[:2] != ("calc-info", "parameter_files") or path[3] != 0:
                return None
            info = objects[1] if len(objects) > 1 else {}
            if isinstance(info.get("command"), str) and info["command"] not in self.config.commands:
                return DiscardSink()  # it will be refused: do not store its inputs
            name = bare_name(str(path[2]), "parameter file")
            count[0] += 1
            return Base64FileSink(safe_join(wd.cwd, name), f"parameter file {name!r}")

        params = {"accept_id": rec.accept_id, "site_id": rec.site}
        try:
            doc = self.api.get_stream("calc-params", params, sink_for)
        except ValueError as exc:  # an unsafe file name: nothing of it was written
            return self._exited(rec.ack("calc-params"), 1, f"calc-params refused: {exc}")
        except MintError as exc:
            _raise_if_server_trouble(exc)
            raise CalcGone(exc.message) from None
        info = doc.get("calc-info")
        if not isinstance(info, dict):
            code = (doc.get("errors") or [{}])[0] if isinstance(doc.get("errors"), list) else {}
            raise CalcGone(f"calc-params: no calc-info in the answer ({code})")
        command = info.get("command")
        wanted = info.get("result_files") or {}
        if not isinstance(command, str) or not isinstance(wanted, dict | list):
            return self._exited(
                rec.ack("calc-params"),
                1,
                "calc-params: the answer has no usable command/result_files",
            )
        log.info("%s: %s with %d input file(s)", rec.accept_id, command, count[0])
        return self.state.save(rec.with_(command=command, wanted=tuple(str(n) for n in wanted))
                               .ack("calc-params"))  # fmt: skip

    def _supervise(self, rec: MintRecord) -> MintRecord:
        wd = self._wd(rec)
        spec = self.config.commands.get(rec.command)
        executor = self._executor(spec.executor if spec else "local")
        started = Started(pid=rec.pid, job_id=rec.job_id)
        while True:
            outcome = executor.poll(wd, started)
            if outcome is not None:
                break
            if rec.timeout and rec.started and rec.kill_reason is None and \
                    time.time() - rec.started > rec.timeout:  # fmt: skip
                why = f"timed out after {rec.timeout:g} s; the program was stopped"
                rec = self.state.save(rec.with_(kill_reason=why))
                executor.stop(wd, started)
                continue
            if self.stop_event.wait(0.2):
                return rec  # stopping: the program keeps running and is re-attached later
        if rec.kill_reason is not None:
            return self._exited(rec, TIMEOUT_EXIT, rec.kill_reason)
        reason = outcome.reason
        if outcome.exit_code != 0 and reason is None:
            reason = f"the program exited with code {outcome.exit_code}"
        return self._exited(rec, outcome.exit_code, reason)

    def _exited(self, rec: MintRecord, exit_code: int, reason: str | None) -> MintRecord:
        """Decide the outcome once; a failure's reason goes to the end of the stderr result."""
        wd = self._wd(rec)
        wd.create()
        wanted = [n for n in rec.wanted if n not in LOGS]
        if exit_code == 0 and wanted and not any(self._result_path(wd, n) for n in wanted):
            reason = "the program made none of the requested result files: " + ", ".join(wanted)
        result = "calc end" if exit_code == 0 and reason is None else "abnormal"
        rec = self.state.save(rec.with_(phase=Phase.EXITED, exit_code=exit_code, reason=reason,
                                        result=result))  # fmt: skip
        if reason:
            with wd.stderr.open("ab") as fh:
                fh.write(f"\nextcomp-poller: {reason}\n".encode())
        log.info("%s: %s (exit code %d%s)", rec.accept_id, result, exit_code,
                 f"; {reason}" if reason else "")  # fmt: skip
        return rec

    def _report(self, rec: MintRecord) -> MintRecord:
        rec = self._step(rec, "calc-end", result=rec.result)
        if "send-results" not in rec.acked:
            try:
                self.api.call("POST", "send-results", body=self._results_body(rec))
                rec = self.state.save(rec.ack("send-results"))
            except MintError as exc:
                _raise_if_server_trouble(exc)
                # Our server refuses a repeat once it stored the results (the answer to the
                # first send was lost): end-send tells whether the server has them.
                log.warning("%s: send-results refused (%s); trying end-send",
                            rec.accept_id, exc.message)  # fmt: skip
        rec = self._step(rec, "end-send", result="end send")
        log.info("%s: results delivered (%s)", rec.accept_id, rec.result)
        return self.state.save(rec.with_(phase=Phase.DONE))

    def _result_path(self, wd: WorkDir, name: str) -> Path | None:
        if name == JP_STDOUT:
            return wd.stdout if wd.stdout.is_file() else None
        if name == JP_STDERR:
            return wd.stderr if wd.stderr.is_file() else None
        try:
            path = safe_join(wd.cwd, bare_name(name, "result"))
        except ValueError:
            return None
        return path if path.is_file() and not path.is_symlink() else None

    def _results_body(self, rec: MintRecord) -> StreamBody:
        """`{accept_id, site_id, result_files: {name: {content, mimetype1, mimetype2}}}`."""
        wd = self._wd(rec)
        names = list(dict.fromkeys([*rec.wanted, *LOGS]))
        pieces: list[Piece] = [
            b'{"accept_id": ' + js(rec.accept_id) + b', "site_id": ' + js(rec.site)
            + b', "result_files": {'
        ]  # fmt: skip
        for i, name in enumerate(names):
            pieces.append((b", " if i else b"") + js(name) + b': {"content": "')
            path = self._result_path(wd, name)
            if path is None:
                why = f"{name}: no such result file in the calc dir"
                pieces.append(b'", "mimetype1": "Error", "mimetype2": ' + js(why) + b"}")
                continue
            with path.open("rb") as fh:
                mime1, mime2 = sniff(fh, name)
            pieces.append(FileB64.of(path))
            pieces.append(b'", "mimetype1": ' + js(mime1) + b', "mimetype2": ' + js(mime2) + b"}")
        pieces.append(b"}}")
        return StreamBody(pieces)

    def _drop(self, rec: MintRecord, reason: str) -> None:
        if rec.phase is Phase.RUNNING and rec.exit_code is None:
            spec = self.config.commands.get(rec.command)
            self._executor(spec.executor if spec else "local").stop(
                self._wd(rec), Started(pid=rec.pid, job_id=rec.job_id)
            )
        log.warning("%s: dropped (%s)", rec.accept_id, reason)
        self.state.save(rec.with_(phase=Phase.DROPPED, reason=rec.reason or reason))

    def _executor(self, name: str) -> Executor:
        if name not in self._executors:
            self._executors[name] = make_executor(name)
        return self._executors[name]


def _raise_if_server_trouble(exc: MintError) -> None:
    """Token refusals and 5xx/garbled answers are the loop's business, not this calc's."""
    if exc.refused or exc.status >= 500 or exc.status == 0:
        raise exc
