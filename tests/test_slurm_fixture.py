"""The Slurm fixture itself: a job runs, and stopping the cluster leaves no process behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.fixtures.slurm import _alive, _pids_under, missing, start_slurm, stop_slurm


@pytest.mark.slow
def test_a_stopped_cluster_leaves_no_process(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster needs root (SlurmUser=root, a private munged)")
    assert not missing(), f"not installed: {missing()}; run scripts/bootstrap-system.sh"
    pid_file = tmp_path / "job.pid"
    cluster = start_slurm(tmp_path / "cluster")
    try:
        cluster.run(
            "sbatch", f"--output={tmp_path}/job.out", "--wrap", f"echo $$ > {pid_file}; sleep 300"
        )
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, cluster.log_tail()
            time.sleep(0.1)
        job_pid = int(pid_file.read_text())
        assert _pids_under(cluster.root)  # the daemons and the job's slurmstepd
    finally:
        stop_slurm(cluster)
    assert _pids_under(cluster.root) == []
    assert not _alive(job_pid)  # the job ended with its cluster
