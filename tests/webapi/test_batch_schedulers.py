"""The slurm and pbs executors against a real Slurm (and slurm-wlm-torque's qsub/qstat/qdel).

Every outcome at once, so the one slow case (a batch time limit, enforced by slurmctld's 30 s
sweep: ~60-90 s after the start) sets the test's length: exit 0, a non-zero code, a cancel
(scancel / qdel), the time limit (--time / walltime), each through both schedulers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.slurm import SlurmCluster
from webapi.errors import Exit
from webapi.poller.config import BatchPoll
from webapi.poller.executors import Outcome, Started
from webapi.poller.executors.batch import BatchExecutor
from webapi.poller.workdir import WorkDir

PY = sys.executable
POLL = BatchPoll(first=0.2, max=2.0)


def _program(code: int, sleep: float = 0.0) -> list[str]:
    return [
        PY,
        "-c",
        f"import sys, time; print('hello', flush=True); time.sleep({sleep}); sys.exit({code})",
    ]


@pytest.mark.slow
def test_outcomes_through_slurm_and_pbs(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("EXTCOMP_POLLER_PASSWORD", "poller-secret-Xq7")  # never reaches a job
    executors = {"slurm": BatchExecutor("slurm", poll=POLL), "pbs": BatchExecutor("pbs", poll=POLL)}
    limit = {"slurm": ["--time=1"], "pbs": ["-l", "walltime=00:01:00"]}
    cases = {
        "ok": (_program(0), []),
        "env": (
            [PY, "-c", "import os; print(sorted(k for k in os.environ if 'EXTCOMP' in k))"],
            [],
        ),
        "code": (_program(3), []),
        "cancel": (_program(0, sleep=300), []),
        "limit": (_program(0, sleep=300), None),
    }
    jobs: dict[tuple[str, str], tuple[WorkDir, Started]] = {}
    begun = time.monotonic()
    for kind, ex in executors.items():
        for case, (argv, options) in cases.items():
            wd = WorkDir.for_calc(tmp_path / kind, f"c-{case}")
            st = ex.start(argv, wd, limit[kind] if options is None else options)
            assert st.job_id and st.job_id.isdigit()
            jobs[kind, case] = (wd, st)

    # The cancel reaches the scheduler once the program runs (and has printed its greeting).
    for kind, ex in executors.items():
        wd, st = jobs[kind, "cancel"]
        _wait_for(lambda wd=wd: wd.stdout.exists() and "hello" in wd.stdout.read_text(), 30)
        ex.stop(wd, st)

    outcomes: dict[tuple[str, str], Outcome] = {}
    deadline = time.monotonic() + 150
    while len(outcomes) < len(jobs) and time.monotonic() < deadline:
        for key, (wd, st) in jobs.items():
            if key not in outcomes:
                got = executors[key[0]].poll(wd, st)
                if got is not None:
                    outcomes[key] = got
        time.sleep(0.1)
    elapsed = time.monotonic() - begun
    assert len(outcomes) == len(jobs), (sorted(set(jobs) - set(outcomes)), slurm_cluster.log_tail())

    for kind in executors:
        assert outcomes[kind, "env"] == Outcome(0, None)
        assert jobs[kind, "env"][0].stdout.read_text() == "[]\n", kind
        assert outcomes[kind, "ok"] == Outcome(0, None)
        assert outcomes[kind, "code"] == Outcome(3, None)
        assert jobs[kind, "ok"][0].stdout.read_text() == "hello\n"
        cancelled = outcomes[kind, "cancel"]
        assert cancelled.exit_code == 128 + 15, cancelled
    # Slurm says why a job ended; the PBS wrapper says only "C" (see docs/batch.md).
    assert "was cancelled in the batch system" in (outcomes["slurm", "cancel"].reason or "")
    assert outcomes["slurm", "limit"].exit_code == Exit.TIMEOUT
    assert "time limit" in (outcomes["slurm", "limit"].reason or "")
    assert outcomes["pbs", "limit"].exit_code == 128 + 15
    for kind, case in jobs:
        job = slurm_cluster.job(jobs[kind, case][1].job_id or "")
        expected = {
            "ok": "COMPLETED",
            "env": "COMPLETED",
            "code": "FAILED",
            "cancel": "CANCELLED",
            "limit": "TIMEOUT",
        }
        assert job["JobState"] == expected[case], (kind, case, job)

    # A bounded poll: each job's scheduler queries grow apart up to `max` seconds.
    for ex in executors.values():
        bound = len(cases) * (elapsed / POLL.max + 8)
        assert 0 < ex.queries <= bound, (ex.queries, bound)


def _wait_for(cond: object, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
