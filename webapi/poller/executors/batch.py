"""Slurm and PBS executors: submit the allow-listed argv as a batch job, watch it, cancel it.

The batch script is a small Python program (no shell) holding the argv as JSON; it runs the
program in the calc's work dir under the same exit-file wrapper as the local executor. The work
dir (and this venv) must be on a file system shared with the compute nodes. The exit file is
read at every poll (a file read); the scheduler itself is asked with a backoff, `first` seconds
after the submit, then twice as long each time up to `max` (`batch_poll` in the poller config),
because HPC sites dislike clients that poll their controller often.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from webapi.errors import Exit
from webapi.poller.config import BatchPoll
from webapi.poller.executors import Outcome, Started, read_exit_file, reserve_exit_file
from webapi.poller.executors.local import WRAPPER
from webapi.poller.executors.scheduler import JobState, SchedulerError, run, scheduler
from webapi.poller.workdir import WorkDir

log = logging.getLogger(__name__)

_SCRIPT = '''#!{python}
"""extcomp batch job: run one program (argv below) under exitwrap, which records its exit."""
import json, os
os.environ.update(json.loads({env!r}))
os.chdir({cwd!r})
argv = json.loads({argv!r})
os.execv({python!r}, [{python!r}, "-m", {wrapper!r}, {exit_file!r}, "--", *argv])
'''

# After the scheduler says the job is over, how long the exit file may lag behind on a shared
# file system (NFS attribute caches hold ~3 s by default).
EXIT_FILE_LAG_S = 5.0
# The first pause while waiting for the scheduler's verdict on a killed program (it doubles).
VERDICT_PAUSE_S = 0.5
VERDICT_WAIT_S = 120.0  # … and how long at most before the outcome goes without it


class BatchExecutor:
    def __init__(self, kind: str, *, poll: BatchPoll | None = None) -> None:
        self.scheduler = scheduler(kind)
        self.kind = kind
        self.poll_every = poll or BatchPoll()
        # Per job id: when to ask the scheduler next, and the pause after that.
        self._next_query: dict[str, tuple[float, float]] = {}
        # Jobs whose program was killed by a signal, and since when the scheduler is asked why.
        self._verdicts: dict[str, float] = {}
        self.queries = 0  # scheduler queries made (tests check the poll stays bounded)

    def write_script(
        self, argv: Sequence[str], wd: WorkDir, env: Mapping[str, str] | None = None
    ) -> Path:
        script = wd.root / "batch-job.py"
        text = _SCRIPT.format(
            python=sys.executable,
            argv=json.dumps(list(argv)),
            cwd=str(wd.cwd),
            exit_file=str(wd.exit_file),
            env=json.dumps(dict(env or {})),
            wrapper=WRAPPER,
        )
        script.write_text(text, encoding="utf-8")
        script.chmod(0o700)
        return script

    def submit_argv(self, script: Path, wd: WorkDir, options: Sequence[str]) -> list[str]:
        name = f"extcomp-{wd.root.name}"[:60]
        return self.scheduler.submit_argv(script, name, wd.cwd, wd.stdout, wd.stderr, options)

    def start(
        self,
        argv: Sequence[str],
        wd: WorkDir,
        options: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
    ) -> Started:
        wd.create()
        reserve_exit_file(wd.exit_file)
        script = self.write_script(argv, wd, env)
        job_id = self.scheduler.parse_job_id(run(self.submit_argv(script, wd, options)))
        if not job_id:
            raise OSError(f"{self.kind}: the submit command printed no job id")
        log.info("submitted %s job %s for %s", self.kind, job_id, wd.root.name)
        self._next_query[job_id] = (time.monotonic() + self.poll_every.first, self.poll_every.first)
        return Started(job_id=job_id)

    def poll(self, wd: WorkDir, started: Started) -> Outcome | None:
        outcome = read_exit_file(wd.exit_file)
        if started.job_id is None:
            return outcome or Outcome(1, "no batch job recorded for this calc", lost=True)
        job_id = started.job_id
        if outcome is not None:
            if outcome.exit_code > 128 and outcome.reason:
                # Killed by a signal: the scheduler's final word says whether it did it (time
                # limit, scancel); it has it once the job has left COMPLETING, seconds later.
                now = time.monotonic()
                if job_id not in self._verdicts:
                    self._verdicts[job_id] = now
                    self._next_query[job_id] = (now, VERDICT_PAUSE_S)
                if not self._due(job_id):
                    return None
                state = self._query(job_id)
                if state is not None and not state.done:
                    if now - self._verdicts[job_id] < VERDICT_WAIT_S:
                        return None
                    state = None  # no verdict in time: the exit file's word is enough
                self._verdicts.pop(job_id, None)
                self._next_query.pop(job_id, None)
                return self._explained(outcome, job_id, state)
            self._next_query.pop(job_id, None)
            return outcome
        if not self._due(job_id):
            return None
        state = self._query(job_id)
        if state is None or not state.done:
            return None
        self._next_query.pop(job_id, None)
        # The job is over; the exit file may lag behind on a shared file system.
        deadline = time.monotonic() + EXIT_FILE_LAG_S
        while outcome is None and time.monotonic() < deadline:
            time.sleep(0.2)
            outcome = read_exit_file(wd.exit_file)
        if outcome is not None:
            return self._explained(outcome, job_id, state)
        why = f"{self.kind} job {job_id} ended as {state.name} without an exit status"
        if state.timed_out:
            return Outcome(Exit.TIMEOUT, f"{why}: it hit the batch system's time limit")
        if state.cancelled:
            return Outcome(Exit.FAILED, f"{why}: it was cancelled in the batch system")
        return Outcome(Exit.FAILED, why + " (killed by the scheduler?)")

    def _due(self, job_id: str) -> bool:
        """Whether the scheduler may be asked about `job_id` now; moves the next time on."""
        now = time.monotonic()
        # A job this executor did not submit (the poller restarted): ask at once.
        when, pause = self._next_query.get(job_id, (now, self.poll_every.first))
        if now < when:
            return False
        nxt = min(pause * 2, self.poll_every.max)
        self._next_query[job_id] = (now + pause, nxt)
        return True

    def _query(self, job_id: str) -> JobState | None:
        self.queries += 1
        return self.scheduler.state(job_id)

    def _explained(self, outcome: Outcome, job_id: str, state: JobState | None) -> Outcome:
        if state is None:
            return outcome
        if state.timed_out:
            return Outcome(
                Exit.TIMEOUT,
                f"{self.kind} job {job_id} hit the batch system's time limit and was stopped "
                f"({outcome.reason})",
            )
        if state.cancelled:
            return Outcome(
                outcome.exit_code,
                f"{self.kind} job {job_id} was cancelled in the batch system ({outcome.reason})",
            )
        return outcome

    def stop(self, wd: WorkDir, started: Started, grace: float = 5.0) -> None:
        if started.job_id is None:
            return
        try:
            run(self.scheduler.cancel_argv(started.job_id))
        except SchedulerError as exc:
            log.warning("%s: cannot cancel job %s: %s", self.kind, started.job_id, exc)
        # A job cancelled before it started leaves no exit file: ask the scheduler soon.
        first = self.poll_every.first
        self._next_query[started.job_id] = (time.monotonic() + min(first, 1.0), first)
