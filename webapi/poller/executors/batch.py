"""Slurm and PBS executors: submit the allow-listed argv as a batch job, watch it, cancel it.

The batch script is a small Python program (no shell) holding the argv as JSON; it runs the
program in the calc's work dir under the same exit-file wrapper as the local executor. The work
dir (and this venv) must be on a file system shared with the compute nodes. Scheduler queries
are throttled (`query_every` s) because HPC sites dislike clients that poll their controller often.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from webapi.poller.executors import Outcome, Started, read_exit_file, reserve_exit_file
from webapi.poller.executors.local import WRAPPER
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

# Scheduler states meaning the job is over (Slurm `sacct` State / PBS `job_state`).
_SLURM_DONE = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
_PBS_DONE = {"C", "F", "E", "X"}


class BatchExecutor:
    def __init__(self, kind: str, *, query_every: float = 30.0) -> None:
        if kind not in ("slurm", "pbs"):
            raise ValueError(f"unknown batch system {kind!r}")
        self.kind = kind
        self.query_every = query_every
        self._last_query: dict[str, float] = {}

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
        if self.kind == "slurm":
            return [
                "sbatch",
                "--parsable",
                f"--job-name={name}",
                f"--chdir={wd.cwd}",
                f"--output={wd.stdout}",
                f"--error={wd.stderr}",
                *options,
                str(script),
            ]
        return [
            "qsub",
            "-N",
            name,
            "-o",
            str(wd.stdout),
            "-e",
            str(wd.stderr),
            *options,
            str(script),
        ]

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
        out = _run(self.submit_argv(script, wd, options))
        job_id = out.strip().split(";")[0].strip()
        if not job_id:
            raise OSError(f"{self.kind}: the submit command printed no job id")
        log.info("submitted %s job %s for %s", self.kind, job_id, wd.root.name)
        return Started(job_id=job_id)

    def poll(self, wd: WorkDir, started: Started) -> Outcome | None:
        outcome = read_exit_file(wd.exit_file)
        if outcome is not None or started.job_id is None:
            return outcome or Outcome(1, "no batch job recorded for this calc", lost=True)
        now = time.monotonic()
        if now - self._last_query.get(started.job_id, 0.0) < self.query_every:
            return None
        self._last_query[started.job_id] = now
        state = self.job_state(started.job_id)
        if state is None:
            return None  # scheduler did not answer: ask again later
        done = _SLURM_DONE if self.kind == "slurm" else _PBS_DONE
        if state not in done:
            return None
        # The job is over; the exit file may lag behind on a shared file system.
        time.sleep(1.0)
        outcome = read_exit_file(wd.exit_file)
        why = f"{self.kind} job {started.job_id} ended as {state} without an exit status"
        return outcome or Outcome(1, why + " (killed by the scheduler?)")

    def job_state(self, job_id: str) -> str | None:
        try:
            if self.kind == "slurm":
                out = _run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State"])
                first = out.strip().splitlines()[0] if out.strip() else "PENDING"
                return first.split()[0].upper()
            out = _run(["qstat", "-x", "-f", job_id])
            for line in out.splitlines():
                key, _, value = line.strip().partition(" = ")
                if key == "job_state":
                    return value.strip()
            return None
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("%s: cannot query job %s: %s", self.kind, job_id, exc)
            return None

    def stop(self, wd: WorkDir, started: Started, grace: float = 5.0) -> None:
        if started.job_id is None:
            return
        try:
            _run(["scancel", started.job_id] if self.kind == "slurm" else ["qdel", started.job_id])
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("%s: cannot cancel job %s: %s", self.kind, started.job_id, exc)


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise OSError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()[:300]}")
    return proc.stdout
