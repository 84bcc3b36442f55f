"""The batch executors' scheduler poll backs off to its maximum (a stand-in scheduler, a fake
clock). The real schedulers are in tests/webapi/test_batch_schedulers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from webapi.poller.config import BatchPoll
from webapi.poller.executors import Started, reserve_exit_file
from webapi.poller.executors import batch as batch_mod
from webapi.poller.executors.batch import BatchExecutor
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
