"""Carry a step through its phases: record each one, reconnect with backoff, finish the results.

The remote side is idempotent per phase (mkdir and push can be repeated, `run` never starts a
program twice, `wait` only reads), so after a lost connection or a killed controller the driver
simply runs the playbook again from the first phase the record does not show as done.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import shlex
import shutil
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from runner import execute, metrics
from runner.errors import (
    EXIT_TIMEOUT,
    Interrupted,
    RemoteError,
    StepError,
    TransportError,
    UsageError,
)
from runner.events import TaskDone, answer_of
from runner.progress import Progress
from runner.record import StepRecord, StepStore, relative_paths, spec_to_dict
from runner.steps import PHASES, Outcome, Phase, StepResult, StepSpec

log = logging.getLogger(__name__)
WAIT_SLICE_S = 30  # one `wait` call blocks on the host up to this long
START_WAIT_S = 5  # `run` itself waits this long, so a short program needs no `wait` call
BACKOFF_CAP_S = 60.0


def partial_dir(spec: StepSpec, step_id: str) -> Path:
    """Where the pull lands until it is complete; a dot name so nobody takes it for results."""
    if spec.merge_results:  # the target exists already and may be the only dir we may write
        return spec.results_dir / f".extcomp-{step_id}.partial"
    return spec.results_dir.parent / f".{spec.results_dir.name}.{step_id}.partial"


class StepDriver:
    """Runs (some of) a recorded step's phases and keeps its record current."""

    def __init__(self, store: StepStore, record: StepRecord, progress: Progress | None = None):
        self.store = store
        self.record = record
        self.spec = record.step_spec()
        self.progress = progress or Progress(enabled=False)
        self._started: dict[str, float] = {}
        # The clean is sent beside the playbook, as soon as the pull is done (see run_phases).
        self._side_clean = False
        self._cleaning: execute.SideCommand | None = None

    # ---- playbook runs -------------------------------------------------------------------------

    def extravars(self) -> dict[str, Any]:
        spec, record = self.spec, self.record
        return {
            "step_work_id": record.work_id,
            "step_helper": spec.helper,
            "step_base_opt": f" --base {spec.remote_base}" if spec.remote_base else "",
            "step_entry": spec.entry,
            "step_start_cmd": self._start_command(),
            "step_inputs": [str(p.resolve()) for p in spec.inputs],
            "step_partial_dir": str(partial_dir(spec, record.step_id).resolve()),
            "step_exclude": list(spec.exclude),
            "step_progress_file": str(self.step_dir / "progress.json"),
            "step_rsync_dir": record.rsync_dir or "",
            "step_wait_slice": WAIT_SLICE_S,
        }

    @property
    def step_dir(self) -> Path:
        return self.store.step_dir(self.record.step_id)

    def run_tags(self, tags: Iterable[str]) -> list[TaskDone]:
        tags = tuple(tags)
        self.record.runs += 1
        self.store.save(self.record)
        request = execute.PlayRequest(
            host=self.spec.host,
            tags=tags,
            extravars=self.extravars(),
            private_dir=self.step_dir / "ansible",
            ident=f"run{self.record.runs:03d}",
            ssh_retries=3 if self.record.connected else 0,
            side=self._side_plan(tags),
        )
        events = execute.PlayEvents(on_start=self._on_start, on_done=self._on_done)
        return execute.play(request, events)

    def _on_start(self, phase: str) -> None:
        self._started[phase] = time.monotonic()
        self.progress.phase(phase)

    def _on_done(self, done: TaskDone) -> None:
        record = self.record
        record.connected = True
        began = self._started.pop(done.phase, None)
        if began is not None:
            timed = Phase.PULL if done.phase == "purge" else done.phase  # part of the pull
            record.seconds[timed] = round(
                record.seconds.get(timed, 0.0) + time.monotonic() - began, 3
            )
        if done.phase == Phase.MKDIR:
            record.rsync_dir = done.answer.get("rsync_dir") or record.rsync_dir
        elif done.phase in (Phase.PUSH, Phase.PULL) and not done.result.get("skipped"):
            attr = "bytes_pushed" if done.phase == Phase.PUSH else "bytes_pulled"
            setattr(record, attr, int(done.result.get("bytes", 0)))
        elif done.phase in (Phase.START, Phase.WAIT, "status", "kill") and done.answer:
            record.remote = done.answer
        if done.phase in PHASES and done.phase not in record.phases_done:
            record.phases_done.append(done.phase)
        if done.phase == Phase.MKDIR and self._nothing_to_push():
            record.phases_done.append(Phase.PUSH)  # its tag was left out (see run_phases)
        self.store.save(record)
        if done.phase == Phase.PULL and self._side_clean and self._cleaning is None:
            # The pull is recorded as done: the work dir may go now, while ansible-playbook
            # still shuts down (its exit and ansible-runner's close take ~0.2 s).
            self._on_start(Phase.CLEAN)
            self._cleaning = execute.SideCommand.start(self.spec.host, self._command("clean"))

    def _command(self, verb: str) -> str:
        """The helper command line the playbook's raw task for `verb` sends (run_step.yml)."""
        base = f" --base {self.spec.remote_base}" if self.spec.remote_base else ""
        return f"{self.spec.helper}{base} {verb} {self.record.work_id}"

    def _side_plan(self, tags: tuple[str, ...]) -> execute.SidePlan | None:
        """What the runner sends itself while ansible-playbook starts up: the mkdir, the push
        when its tag runs, and the start when that follows in this run (execute.SidePlan)."""
        if Phase.MKDIR not in tags:
            return None
        push = Phase.PUSH in tags and bool(self.spec.inputs)
        start = Phase.START in tags and (push or not self.spec.inputs)
        # The pull too, of a program that ends within the start's answer (ended_and_purged):
        # its task then finds the files in place; the record says pulled only after that task.
        pull = start and Phase.PULL in tags
        return execute.SidePlan(
            mkdir=self._command("mkdir"),
            push=tuple(str(p.resolve()) for p in self.spec.inputs) if push else (),
            start=self._start_command() if start else None,
            start_wait=START_WAIT_S + execute.SIDE_WAIT_S,
            progress_file=str(self.step_dir / "progress.json"),
            pull_dest=str(partial_dir(self.spec, self.record.step_id).resolve()) if pull else None,
            pull_exclude=self.spec.exclude,
            mkdir_start=self._start_command(mkdir=True) if start and not push else None,
        )

    def _start_command(self, *, mkdir: bool = False) -> str:
        """The helper's `run` line: starts the entry script detached, waits up to START_WAIT_S
        for it to end (a short program then needs no `wait` call); may be sent twice (the second
        answers `already_started`). With `mkdir`, it creates the work dir first."""
        spec = self.spec
        base = f" --base {spec.remote_base}" if spec.remote_base else ""
        words = ["run", *(["--mkdir"] if mkdir else []), "--entry", spec.entry]
        if spec.timeout:
            words += ["--timeout", str(spec.timeout)]
        if spec.output_log:
            words += ["--log", spec.output_log]
        words += ["--wait", str(START_WAIT_S), self.record.work_id, "--", *spec.args]
        return f"{spec.helper}{base} {shlex.join(words)}"

    def _finish_side_clean(self) -> None:
        """Take the answer of the clean sent beside the playbook; on any failure the clean is
        left undone, and run_phases runs the playbook's task, which reports it properly."""
        cleaning, self._cleaning = self._cleaning, None
        self._side_clean = False  # once: a failure goes the playbook's way
        if cleaning is None:
            self._started.pop(Phase.CLEAN, None)
            return
        answer = cleaning.finish()
        parsed = answer_of({"stdout": answer.stdout}) if answer.rc == 0 else {}
        if "removed" not in parsed:
            self._started.pop(Phase.CLEAN, None)
            log.debug("clean beside the playbook failed (rc %s): %s", answer.rc, answer.stderr)
            return
        self._on_done(TaskDone(Phase.CLEAN, {"rc": 0, "stdout": answer.stdout}, parsed))

    def _nothing_to_push(self) -> bool:
        return not self.spec.inputs and Phase.PUSH not in self.record.phases_done

    # ---- phases with reconnection -------------------------------------------------------------

    def run_phases(self, phases: Iterable[Phase]) -> None:
        """Run the given phases (those not yet done), reconnecting after a lost connection."""
        wanted = list(phases)
        attempt = 0
        while True:
            todo = [p for p in wanted if p not in self.record.phases_done]
            if Phase.PUSH in todo and self._nothing_to_push():
                # A skipped task still costs ansible a worker and its events: leave the tag out.
                # The push counts as done with the mkdir (or now, when that is done already).
                todo.remove(Phase.PUSH)
                if Phase.MKDIR in self.record.phases_done:
                    self.record.phases_done.append(Phase.PUSH)
                    self.store.save(self.record)
            if not todo:
                return
            tags = todo
            # Clean right after a pull of this run needs no task of its own: _on_done sends it
            # beside the playbook once the pull is recorded, over the same master connection.
            self._side_clean = Phase.PULL in todo and Phase.CLEAN in todo
            if self._side_clean and self.spec.host.inventory is None:
                tags = [p for p in todo if p != Phase.CLEAN]
            else:
                self._side_clean = False
            side = self._side_clean
            try:
                try:
                    self.run_tags(tags)
                finally:
                    if side:
                        self._finish_side_clean()
                if side and Phase.CLEAN not in self.record.phases_done:
                    continue  # the clean beside the playbook did not happen: run its task
                return
            except TransportError as exc:
                # Fail fast if we never reached the host: that is a config error, not a blip.
                if not self.record.connected or attempt >= self.spec.reconnect_attempts:
                    raise
                attempt += 1
                delay = min(BACKOFF_CAP_S, 2.0**attempt) * random.uniform(0.5, 1.0)
                log.warning(
                    "%s; reconnecting in %.1f s (attempt %d of %d)",
                    exc.reason,
                    delay,
                    attempt,
                    self.spec.reconnect_attempts,
                )
                self.progress.note(f"connection lost, reconnecting in {delay:.0f} s")
                _sleep_interruptibly(delay)
            finally:
                self.progress.clear()

    # ---- results --------------------------------------------------------------------------------

    def finish_results(self) -> Path:
        """Move the complete pull into place; an old results dir is replaced only with --force."""
        spec = self.spec
        partial = partial_dir(spec, self.record.step_id)
        target = spec.results_dir
        if not partial.is_dir():
            if target.is_dir() and Phase.PULL in self.record.phases_done:
                return target  # finished on an earlier run
            raise RemoteError(f"nothing was pulled into {partial}")
        if spec.merge_results:
            return merge_into(partial, target)
        old = None
        if target.exists():
            if any(target.iterdir()) and not spec.force:
                raise UsageError(
                    f"results dir {target} is not empty; the pulled files are in "
                    f"{partial} (use --force to replace)"
                )
            old = target.parent / f".{target.name}.{self.record.step_id}.old"
            os.replace(target, old)
        os.replace(partial, target)
        if old is not None:
            shutil.rmtree(old)
        return target

    def result(self, results: Path | None) -> StepResult:
        remote = self.record.remote
        state, rc = remote.get("state"), remote.get("rc")
        reason = ""
        if state == "timeout":
            outcome, code = Outcome.TIMEOUT, EXIT_TIMEOUT
            reason = f"killed after the {self.spec.timeout:g} s step timeout"
        elif state in ("exited", "killed") and isinstance(rc, int):
            outcome = Outcome.SUCCEEDED if rc == 0 else Outcome.FAILED
            code = rc
            if state == "killed":
                reason = "stopped on request"
        else:
            outcome, code = Outcome.ERROR, RemoteError.exit_code
            reason = f"the remote program's state is {state or 'unknown'}"
        self.record.outcome, self.record.exit_code, self.record.reason = outcome, code, reason
        self.store.save(self.record)
        return StepResult(
            step_id=self.record.step_id,
            outcome=outcome,
            exit_code=code,
            remote_rc=rc if isinstance(rc, int) else None,
            results_dir=results,
            reason=reason,
            bytes_pushed=self.record.bytes_pushed,
            bytes_pulled=self.record.bytes_pulled,
            seconds=dict(self.record.seconds),
        )

    def fail(self, exc: StepError) -> None:
        """Record the failure and tell in its message what is left where, and what to run."""
        record, step_id = self.record, self.record.step_id
        if isinstance(exc, Interrupted):
            exc.reason = (
                f"interrupted; the step's record is kept: finish it with "
                f"`extcomp-ssh resume {step_id}`"
            )
            record.outcome = Outcome.INTERRUPTED
        else:
            record.outcome = Outcome.ERROR
            left = Phase.MKDIR in record.phases_done and Phase.CLEAN not in record.phases_done
            if isinstance(exc, TransportError) and record.connected:
                exc.reason += (
                    f"; gave up after {self.spec.reconnect_attempts} reconnection attempts. The "
                    f"step's record is kept: finish it with `extcomp-ssh resume {step_id}` once "
                    "the host answers"
                    + (
                        f", or remove its work dir with `extcomp-ssh clean {step_id}`"
                        if left
                        else ""
                    )
                )
            elif left:
                exc.reason += (
                    f"; its work dir {self._remote_dir()} on {self.spec.host.label()} still holds "
                    f"the pushed inputs: remove it with `extcomp-ssh clean {step_id}`"
                )
        record.exit_code, record.reason = exc.exit_code, exc.reason
        self.store.save(record)

    def _remote_dir(self) -> str:
        where = self.record.rsync_dir or self.record.work_id
        if where.startswith("/"):
            return where
        return f"{self.spec.remote_base or 'the site base'}/{where}"


def merge_into(partial: Path, target: Path) -> Path:
    """Move each pulled top-level entry into target, replacing one of the same name."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(partial.iterdir()):
        dest = target / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.replace(entry, dest)
    partial.rmdir()
    return target


def _sleep_interruptibly(seconds: float) -> None:
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None


def check_results_dir(spec: StepSpec) -> None:
    target = spec.results_dir
    if spec.merge_results:
        target.mkdir(parents=True, exist_ok=True)
        return
    if target.exists() and not target.is_dir():
        raise UsageError(f"results path {target} exists and is not a dir")
    if target.is_dir() and any(target.iterdir()) and not spec.force:
        raise UsageError(
            f"results dir {target} is not empty: choose another --results, or "
            "give --force to replace it when the step succeeds"
        )
    target.parent.mkdir(parents=True, exist_ok=True)


def complete(driver: StepDriver, phases: tuple[Phase, ...]) -> StepResult:
    """Run phases to the end of the step and build its result (shared by run and resume)."""
    try:
        driver.run_phases(phases)
        results = driver.finish_results() if Phase.PULL in phases else None
        result = driver.result(results)
    except StepError as exc:
        driver.fail(exc)
        if not isinstance(exc, Interrupted):  # it will be resumed; its textfile comes then
            metrics.write_step_textfile(driver.record, driver.spec.host.label())
        raise
    metrics.write_step_textfile(driver.record, driver.spec.host.label())
    log.info("%s", result.summary())
    return result


def step_phases(spec: StepSpec) -> tuple[Phase, ...]:
    return tuple(p for p in PHASES if not (p == Phase.CLEAN and spec.keep_remote))


def run_step(
    spec: StepSpec, *, store: StepStore | None = None, progress: Progress | None = None
) -> StepResult:
    """Run one step end to end: mkdir, push, start, wait, pull, clean."""
    spec.validate()
    check_results_dir(spec)
    store = store or StepStore()
    record = store.new(spec)
    log.debug("step %s: work dir %s on %s", record.step_id, record.work_id, spec.host.label())
    return complete(StepDriver(store, record, progress), step_phases(spec))


def load_record(store: StepStore, step_id: str) -> StepRecord:
    """A step's record, ready to run from any dir.

    Records written before 0.2 may hold paths relative to the dir the step was started in, and do
    not say which dir that was. The step's first playbook run tells: its extra vars (kept by that
    version's ansible-runner in `ansible/env/extravars`, and in every run's recorded command
    line) hold its partial dir, which was resolved against that dir. Failing
    that (the step never reached a playbook run), the current dir is taken when every file the
    step still needs is there; otherwise this is a usage error that leaves the record as it was.
    """
    record = store.load(step_id)
    relative = relative_paths(record.spec) if record.cwd is None else []
    if not relative:
        return record
    origin = _origin_of_old_record(store, record)
    if origin is None:
        origin = Path.cwd()
        spec = record.step_spec()
        needed = [p for p in (spec.host.key, spec.host.known_hosts, spec.host.inventory) if p]
        if Phase.PUSH not in record.phases_done:
            needed += spec.inputs
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise UsageError(
                f"step {step_id} was recorded with paths relative to the dir it was started in "
                f"({', '.join(relative)}), and {', '.join(missing)} is not here: run "
                f"`extcomp-ssh resume {step_id}` from that dir"
            )
    record.spec = spec_to_dict(record.step_spec(), origin)
    record.cwd = str(origin)
    store.save(record)
    log.info("step %s: paths made absolute against %s", step_id, origin)
    return record


def _origin_of_old_record(store: StepStore, record: StepRecord) -> Path | None:
    """The dir an old record was made in, from its first playbook run's partial dir; or None."""
    partial_dir = _first_partial_dir(store.step_dir(record.step_id) / "ansible")
    if partial_dir is None:
        return None
    partial = Path(partial_dir)
    results = Path(record.spec["results_dir"])
    if results.is_absolute() or record.spec.get("merge_results") or ".." in results.parts:
        return None
    origin = partial.parent
    for _ in results.parent.parts:
        origin = origin.parent
    # Only if that really is the dir: the same partial dir, resolved from there.
    if (origin / results).parent.resolve() / partial.name != partial:
        return None
    return origin


def _first_partial_dir(ansible: Path) -> str | None:
    """step_partial_dir as a playbook run of the step was given it: from the extra vars file the
    ansible-runner of that version kept (`env/extravars`), else from a run's recorded command
    line (`artifacts/*/command`, its `-e` JSON)."""
    try:
        return str(json.loads((ansible / "env" / "extravars").read_text())["step_partial_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for command in sorted((ansible / "artifacts").glob("*/command")):
        try:
            args = json.loads(command.read_text())["command"]
            for flag, value in itertools.pairwise(args):
                if flag == "-e" and value.startswith("{"):
                    return str(json.loads(value)["step_partial_dir"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def resume_step(
    step_id: str, *, store: StepStore | None = None, progress: Progress | None = None
) -> StepResult:
    """Finish a step from its record, from the first phase not yet done."""
    store = store or StepStore()
    record = load_record(store, step_id)
    driver = StepDriver(store, record, progress)
    if record.outcome in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMEOUT):
        return driver.result(driver.spec.results_dir)
    return complete(driver, step_phases(driver.spec))


def run_part(
    step_id: str,
    phases: tuple[Phase, ...],
    *,
    store: StepStore | None = None,
    progress: Progress | None = None,
) -> StepRecord:
    """Run some phases of a recorded step again (the debugging verbs push/exec/pull/clean)."""
    store = store or StepStore()
    record = load_record(store, step_id)
    record.phases_done = [p for p in record.phases_done if p not in phases]
    driver = StepDriver(store, record, progress)
    try:
        driver.run_phases(phases)
        if Phase.PULL in phases:
            driver.spec = replace(driver.spec, force=True)  # the user asked for this pull
            driver.finish_results()
    except StepError as exc:
        driver.fail(exc)
        raise
    return driver.record


def start_part(
    spec: StepSpec, *, store: StepStore | None = None, progress: Progress | None = None
) -> StepRecord:
    """Create a step record and run mkdir + push only (`extcomp-ssh push`)."""
    spec.validate()
    store = store or StepStore()
    record = store.new(spec)
    return run_part(record.step_id, (Phase.MKDIR, Phase.PUSH), store=store, progress=progress)


def remote_status(step_id: str, *, store: StepStore | None = None) -> StepRecord:
    """Ask the host for a step's state and keep the answer in its record."""
    store = store or StepStore()
    drv = StepDriver(store, load_record(store, step_id))
    drv.run_tags(("status",))
    return drv.record
