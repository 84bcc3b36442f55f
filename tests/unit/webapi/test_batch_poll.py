"""The batch executors' scheduler poll backs off to its maximum (a stand-in scheduler, a fake
clock). The real schedulers are in tests/webapi/test_batch_schedulers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from webapi.errors import Exit
from webapi.fs import write_atomic
from webapi.poller.config import BatchPoll
from webapi.poller.executors import Started, exit_record, reserve_exit_file
from webapi.poller.executors import batch as batch_mod
from webapi.poller.executors.batch import VERDICT_WAIT_S, BatchExecutor
from webapi.poller.executors.scheduler import JobState, Slurm
from webapi.poller.workdir import WorkDir


class FakeScheduler(Slurm):
    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.asked: list[float] = []

    def state(self, job_id: str) -> JobState | None:
        self.asked.append(self.clock[0])
        return JobState("RUNNING", done=False)


def test_scheduler_queries_back_off_to_the_maximum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(batch_mod.time, "monotonic", lambda: clock[0])
    ex = BatchExecutor("slurm", poll=BatchPoll(first=1, max=4))
    fake = FakeScheduler(clock)
    ex.scheduler = fake
    wd = WorkDir.for_calc(tmp_path, "c-1")
    wd.create()
    reserve_exit_file(wd.exit_file)
    # A restarted poller polls every 1/8 s (a file read) for 20 s of (fake) time.
    for _ in range(160):
        assert ex.poll(wd, Started(job_id="7")) is None
        clock[0] += 0.125
    gaps = [b - a for a, b in zip(fake.asked, fake.asked[1:], strict=False)]
    assert fake.asked[0] == 1000.0  # a job this executor did not submit: asked at once
    assert gaps[:4] == [1.0, 2.0, 4.0, 4.0]
    assert set(gaps[2:]) == {4.0}
    assert ex.queries == len(fake.asked) == 7


class StateSequence(Slurm):
    """Answers the given states in turn, then the last one for ever."""

    def __init__(self, *states: JobState) -> None:
        self.states = list(states)

    def state(self, job_id: str) -> JobState | None:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def _killed(tmp_path: Path) -> WorkDir:
    """A work dir whose exit file says the program died of SIGTERM."""
    wd = WorkDir.for_calc(tmp_path, "c-2")
    wd.create()
    write_atomic(
        wd.exit_file,
        exit_record({"exit_code": 143, "reason": "the program was killed by signal SIGTERM"}),
    )
    return wd


def test_a_killed_program_waits_for_the_schedulers_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [50.0]
    monkeypatch.setattr(batch_mod.time, "monotonic", lambda: clock[0])
    ex = BatchExecutor("slurm", poll=BatchPoll(first=1, max=4))
    ex.scheduler = StateSequence(JobState("COMPLETING", done=False), JobState("TIMEOUT", done=True))
    wd = _killed(tmp_path)
    assert ex.poll(wd, Started(job_id="9")) is None  # still COMPLETING
    clock[0] += 0.5
    outcome = ex.poll(wd, Started(job_id="9"))
    assert outcome is not None and outcome.exit_code == Exit.TIMEOUT
    assert "slurm job 9 hit the batch system's time limit" in (outcome.reason or "")


def test_no_verdict_in_time_keeps_the_exit_files_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [50.0]
    monkeypatch.setattr(batch_mod.time, "monotonic", lambda: clock[0])
    ex = BatchExecutor("slurm", poll=BatchPoll(first=1, max=4))
    ex.scheduler = StateSequence(JobState("COMPLETING", done=False))
    wd = _killed(tmp_path)
    outcome = None
    while outcome is None:
        assert clock[0] < 50.0 + VERDICT_WAIT_S + 10, "the wait for a verdict is unbounded"
        outcome = ex.poll(wd, Started(job_id="9"))
        clock[0] += 0.5
    assert outcome.exit_code == 143
    assert outcome.reason == "the program was killed by signal SIGTERM"
    assert clock[0] >= 50.0 + VERDICT_WAIT_S
