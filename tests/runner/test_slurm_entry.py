"""SSH mode on a Slurm site: the Slurm entry script over the real sshd, on a real Slurm cluster.

The step's program (tests/fixtures/test_entry.sh, as the site's batch program) runs as a batch
job; its exit code comes back as the step's; a step timeout cancels the job with scancel; and a
`resume` after both the controller and the host's supervisor died re-attaches to the recorded
job instead of submitting it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner import resources
from runner.record import StepStore
from tests.fixtures.slurm import SlurmCluster
from tests.fixtures.sshd import SshHost

ENTRY = "execute_remote-side_program_slurm.sh"
pytestmark = pytest.mark.slow


@pytest.fixture
def slurm_site(ssh_host: SshHost, slurm_cluster: SlurmCluster) -> Iterator[SshHost]:
    """The test host's site dir with the Slurm entry script and a batch.conf for this cluster."""
    shutil.copy2(resources.remote_dir() / ENTRY, ssh_host.site_dir / ENTRY)
    conf = ssh_host.site_dir / "batch.conf"
    conf.write_text(
        f"export SLURM_CONF={slurm_cluster.conf}\n"
        f'EXTCOMP_BATCH_PROGRAM="{ssh_host.site_dir}/test_entry.sh"\n'
        "EXTCOMP_BATCH_POLL_FIRST=1\nEXTCOMP_BATCH_POLL=1\n"
    )
    yield ssh_host
    conf.unlink()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner.cli", *args]


def run_args(host: SshHost, results: Path, *extra: str) -> list[str]:
    flags = [*host.cli_flags(), "--entry", ENTRY, "--results", str(results)]
    return ["run", "--host", host.target, *flags, *extra]


def test_program_runs_as_a_batch_job_and_its_code_returns(
    slurm_site: SshHost, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    out = subprocess.run(
        cli(*run_args(slurm_site, results), "--", "put", "r.txt", "from the job", "exit", "3"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3, out.stderr
    assert (results / "r.txt").read_text() == "from the job\n"
    log = (results / "batch-job.log").read_text()
    job_id = log.split("submitted slurm job ")[1].split()[0]
    job = slurm_cluster.job(job_id)
    assert (job["JobState"], job["ExitCode"]) == ("FAILED", "3:0")
    assert f"slurm job {job_id} ended (FAILED) with rc=3" in log


def test_a_refused_submit_says_why(slurm_site: SshHost, tmp_path: Path) -> None:
    conf = slurm_site.site_dir / "batch.conf"
    settings = conf.read_text()
    conf.write_text(settings + "export SBATCH_PARTITION=no-such-partition\n")
    try:
        out = subprocess.run(
            cli(*run_args(slurm_site, tmp_path / "results"), "--", "exit", "0"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        conf.write_text(settings)
    assert out.returncode == 78, out.stderr
    log = (tmp_path / "results" / "batch-job.log").read_text()
    assert "sbatch refused the job (rc 1): sbatch: error:" in log, log
    assert "invalid partition" in log.lower(), log


def test_a_step_timeout_cancels_the_batch_job(
    slurm_site: SshHost, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    out = subprocess.run(
        cli(*run_args(slurm_site, results, "--timeout", "4"), "--", "sleep", "120"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 124, out.stderr
    log = (results / "batch-job.log").read_text()
    job_id = log.split("submitted slurm job ")[1].split()[0]
    assert f"stopping: scancel {job_id}" in log
    assert slurm_cluster.job(job_id)["JobState"] == "CANCELLED"


def test_resume_reattaches_to_the_running_job(
    slurm_site: SshHost, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """The controller dies, and so do the host's supervisor and entry script (a login node
    rebooted, say): the batch job runs on. `resume` starts the entry script again, which finds
    the recorded job id and waits for that job: one job, one run of the program."""
    results = tmp_path / "results"
    flag = "go"
    proc = subprocess.Popen(
        cli(
            *run_args(slurm_site, results), "--", "await", flag, "put", "r.txt", "done", "exit", "7"
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work = _wait_for(_job_recorded(slurm_site), "the batch job to be submitted")
    job_id = (work / ".extcomp" / "batch-job").read_text().strip()
    _wait_for(lambda: slurm_cluster.job(job_id)["JobState"] == "RUNNING", "the job to run")
    started = json.loads((work / ".extcomp" / "started.json").read_text())
    for pid in [proc.pid, *_children(proc.pid)]:  # the controller with all it started
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.kill(started["supervisor"], signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(started["pid"], signal.SIGKILL)
    assert slurm_cluster.job(job_id)["JobState"] == "RUNNING"

    (work / flag).touch()  # the program may end now
    record = StepStore().list()[0]
    out = subprocess.run(cli("resume", record.step_id), capture_output=True, text=True, timeout=120)
    assert out.returncode == 7, out.stderr
    assert (results / "r.txt").read_text() == "done\n"
    log = (results / "batch-job.log").read_text()
    assert log.count("submitted slurm job") == 1
    assert f"re-attaching to slurm job {job_id}" in log
    assert (results / "remote_program_exec.log").read_text().count("test_entry: cwd=") == 1
    assert slurm_cluster.jobs_named(f"extcomp-{work.name}") == [job_id]


def _job_recorded(host: SshHost) -> Callable[[], Path | None]:
    def check() -> Path | None:
        records = StepStore().list()
        if not records:
            return None
        work = host.base / records[0].work_id
        return work if (work / ".extcomp" / "batch-job").exists() else None

    return check


def _wait_for(predicate: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _children(pid: int) -> list[int]:
    """All descendants of pid (from /proc), deepest last."""
    kids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(entry.name))
    return kids + [g for k in kids for g in _children(k)]
