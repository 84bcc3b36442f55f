"""Scheduler answers from stand-in qstat/squeue/sacct scripts: OpenPBS history, a purged job, a
controller that is down. The real schedulers are in tests/webapi/test_batch_schedulers.py."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from webapi.poller.executors.scheduler import GONE, JobState, Pbs, Slurm


def _tool(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", f"{path}:{os.environ['PATH']}")
    return path


def test_openpbs_history_is_asked_with_x(bindir: Path) -> None:
    _tool(
        bindir,
        "qstat",
        "if '-x' in sys.argv:\n    print('Job Id: 12.srv\\n    job_state = F')\n"
        "else:\n    print('qstat: 12.srv Job has finished, use -x or -H', file=sys.stderr)\n"
        "    sys.exit(35)\n",
    )
    assert Pbs().state("12.srv") == JobState("F", done=True)


def test_a_purged_pbs_job_is_over(bindir: Path) -> None:
    _tool(bindir, "qstat", "print('qstat: Unknown Job Id 12.srv', file=sys.stderr); sys.exit(153)")
    assert Pbs().state("12.srv") == JobState(GONE, done=True)


def test_a_pbs_server_that_is_down_is_asked_again_later(bindir: Path) -> None:
    _tool(bindir, "qstat", "print('cannot connect to server srv', file=sys.stderr); sys.exit(1)")
    assert Pbs().state("12.srv") is None


def test_a_slurm_job_the_controller_forgot_is_over(bindir: Path) -> None:
    _tool(bindir, "squeue", "print('Invalid job id specified', file=sys.stderr); sys.exit(1)")
    _tool(bindir, "sacct", "print('accounting storage is disabled', file=sys.stderr); sys.exit(1)")
    assert Slurm().state("99") == JobState(GONE, done=True)


def test_a_slurm_controller_that_is_down_is_asked_again_later(bindir: Path) -> None:
    _tool(bindir, "squeue", "print('Unable to contact slurm controller', file=sys.stderr); exit(1)")
    assert Slurm().state("99") is None


def test_slurm_states_while_running_and_after(bindir: Path) -> None:
    _tool(bindir, "squeue", "print('COMPLETING')")
    assert Slurm().state("5") == JobState("COMPLETING", done=False)
    _tool(bindir, "squeue", "pass")
    _tool(bindir, "scontrol", "print('JobId=5 JobName=x JobState=TIMEOUT Reason=TimeLimit')")
    state = Slurm().state("5")
    assert state == JobState("TIMEOUT", done=True) and state.timed_out
