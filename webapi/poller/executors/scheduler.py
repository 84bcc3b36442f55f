"""Talk to a site's batch system: the submit, query and cancel command lines of Slurm and PBS.

Every command is an argv list with a timeout. A query answers a `JobState` (the scheduler's own
word, and whether it means the job is over) or None when the scheduler could not be asked (it is
asked again later). Job ids come back exactly as the scheduler printed them.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from webapi.poller.executors import clean_env

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 60.0

# Slurm job states meaning the job is over (squeue/scontrol/sacct `State`).
SLURM_DONE = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)
# PBS `job_state` letters meaning the job is over: C (Torque, and slurm-wlm-torque's wrapper for
# every end), F (OpenPBS finished), E (exiting), X (an OpenPBS subjob finished).
PBS_DONE = frozenset({"C", "F", "E", "X"})
# Said for a job the scheduler no longer knows: it ended so long ago that it was purged.
GONE = "GONE"


@dataclass(frozen=True, slots=True)
class JobState:
    """A batch job's state as the scheduler names it; `done` when it will not run any more."""

    name: str
    done: bool

    @property
    def timed_out(self) -> bool:
        return self.name in ("TIMEOUT", "DEADLINE")

    @property
    def cancelled(self) -> bool:
        return self.name.startswith("CANCELLED")


class SchedulerError(OSError):
    """A scheduler command failed (not installed, refused, timed out)."""


def run(argv: Sequence[str]) -> str:
    """Run one scheduler command; its stdout, or SchedulerError with what it said.

    Without the poller's secrets: sbatch (and qsub -V) hand the submitter's environment to the
    job, and the program must never see a token or a password.
    """
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            env=clean_env(),
        )
    except FileNotFoundError:
        raise SchedulerError(f"{argv[0]} is not installed on this host (or not on PATH)") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{argv[0]} did not answer within {COMMAND_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip())[:300]
        raise SchedulerError(f"{argv[0]} exited {proc.returncode}: {said}")
    return proc.stdout


class Slurm:
    kind = "slurm"

    def submit_argv(
        self, script: Path, name: str, cwd: Path, stdout: Path, stderr: Path, options: Sequence[str]
    ) -> list[str]:
        return [
            "sbatch",
            "--parsable",
            f"--job-name={name}",
            f"--chdir={cwd}",
            f"--output={stdout}",
            f"--error={stderr}",
            *options,
            str(script),
        ]

    def parse_job_id(self, out: str) -> str:
        # `--parsable` prints "ID" or "ID;CLUSTER".
        return out.strip().split(";")[0].strip()

    def state(self, job_id: str) -> JobState | None:
        """squeue while the job is queued or running (the cheap query), scontrol for one that
        has just ended, sacct (needs slurmdbd) for one the controller has already forgotten."""
        try:
            out = run(["squeue", "-h", "-j", job_id, "-o", "%T"]).strip()
            if out:
                return _slurm(out.split()[0])
            out = run(["scontrol", "-o", "show", "job", job_id])
            for word in out.split():
                key, _, value = word.partition("=")
                if key == "JobState":
                    return _slurm(value)
            return None
        except SchedulerError as exc:
            if "invalid job id" not in str(exc).lower():
                log.warning("slurm: cannot query job %s: %s", job_id, exc)
                return None
        try:
            out = run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State"]).strip()
        except SchedulerError:
            return JobState(GONE, done=True)
        return _slurm(out.split()[0]) if out else JobState(GONE, done=True)

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["scancel", job_id]


class Pbs:
    kind = "pbs"

    def submit_argv(
        self, script: Path, name: str, cwd: Path, stdout: Path, stderr: Path, options: Sequence[str]
    ) -> list[str]:
        # PBS has no --chdir: the batch script changes into the work dir itself.
        return ["qsub", "-N", name, "-o", str(stdout), "-e", str(stderr), *options, str(script)]

    def parse_job_id(self, out: str) -> str:
        return out.strip().splitlines()[-1].strip() if out.strip() else ""

    def state(self, job_id: str) -> JobState | None:
        """`qstat -f ID`; a finished job that only OpenPBS's history shows needs `-x` (which is
        XML output on Torque, so it is only tried when qstat says the job has finished)."""
        for argv in (["qstat", "-f", job_id], ["qstat", "-x", "-f", job_id]):
            try:
                out = run(argv)
            except SchedulerError as exc:
                said = str(exc).lower()
                if "unknown job" in said or "exited 153" in said:
                    return JobState(GONE, done=True)
                if "finished" in said and "-x" not in argv:
                    continue  # OpenPBS: "Job has finished, use -x or -H ..."
                log.warning("pbs: cannot query job %s: %s", job_id, exc)
                return None
            for line in out.splitlines():
                key, _, value = line.strip().partition(" = ")
                if key == "job_state":
                    letter = value.strip()
                    return JobState(letter, done=letter in PBS_DONE)
            # The wrapper prints nothing for a purged job.
            return JobState(GONE, done=True) if not out.strip() else None
        return None

    def cancel_argv(self, job_id: str) -> list[str]:
        return ["qdel", job_id]


def _slurm(word: str) -> JobState:
    # scontrol says e.g. "CANCELLED by 0" in squeue's long form; the first word is the state.
    name = word.split()[0].upper().rstrip("+")
    return JobState(name, done=name in SLURM_DONE or name.startswith("CANCELLED"))


def scheduler(kind: str) -> Slurm | Pbs:
    if kind == "slurm":
        return Slurm()
    if kind == "pbs":
        return Pbs()
    raise ValueError(f"unknown batch system {kind!r}")
