"""A real poller process with the `slurm` and `pbs` executors, a real API server and a real Slurm.

Each test runs once per scheduler on the same cluster fixture: `slurm` through sbatch/sacct/
scancel, `pbs` through slurm-wlm-torque's qsub/qstat/qdel (docs/batch.md says what differs from
a real Torque/OpenPBS). The exit code propagates (0 and non-zero); the batch job id reaches the
calc record (the poller's progress) and `extcomp-api calcs show`; a poller killed with -9 and
started again re-attaches to the running job (one job, one run); a cancel from the workflow side
reaches `scancel` / `qdel`.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.slurm import SlurmCluster
from tests.webapi.conftest import RunningServer
from tests.webapi.test_e2e import wait_for
from tests.webapi.test_poller import COUNTING, start_poller, write_config
from webapi.cli import main as client_main
from webapi.client.client import Client

pytestmark = pytest.mark.slow
BATCH = {"batch_poll": {"first": 0.2, "max": 1}}
SLEEP = [sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))"]
EXIT = [sys.executable, "-c", "import sys; print('bye', flush=True); sys.exit(int(sys.argv[1]))"]


@pytest.fixture
def client(api_server: RunningServer) -> Iterator[Client]:
    with Client(
        api_server.url, api_server.tokens["alice"], ca_file=api_server.ca_file, poll_interval=0.2
    ) as c:
        yield c


@pytest.fixture
def slurm_env(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    # The poller (a child process) reaches the test cluster through SLURM_CONF (the torque
    # wrappers are Slurm clients too).
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster


@pytest.fixture(params=["slurm", "pbs"])
def executor(request: pytest.FixtureRequest) -> str:
    """The poller's batch executor under test: both submit to the same real cluster."""
    kind: str = request.param
    return kind


def _job_id(client: Client, calc_id: str, executor: str) -> str:
    progress = client.show(calc_id).progress or ""
    mark = f"as {executor} job "
    return progress.split(mark)[1].split()[0] if mark in progress else ""


def _poller_config(
    api_server: RunningServer, tmp_path: Path, command: str, argv: list[str], executor: str
) -> tuple[Path, Path]:
    """A poller config whose one command runs through `executor`, and the poller's log file."""
    commands = {command: {"argv": argv, "executor": executor}}
    return write_config(api_server, tmp_path, commands=commands, **BATCH), tmp_path / "poller.log"


def test_the_exit_code_propagates(
    api_server: RunningServer,
    client: Client,
    slurm_env: SlurmCluster,
    executor: str,
    tmp_path: Path,
) -> None:
    # "fail" is one of the site's commands (tests/webapi/conftest.py); here it exits with its arg.
    config, log = _poller_config(api_server, tmp_path, "fail", EXIT, executor)
    poller = start_poller(config, log=log)
    try:
        calcs = {code: client.submit("site-a", "fail", [str(code)], []) for code in (0, 3)}
        final = {code: client.wait(calc.id, timeout=60) for code, calc in calcs.items()}
    finally:
        poller.send_signal(signal.SIGTERM)
        poller.wait(timeout=30)
    assert final[0].state == "succeeded" and final[0].exit_code == 0, (final[0], log.read_text())
    assert final[3].state == "failed" and final[3].exit_code == 3, (final[3], log.read_text())
    for code, calc in calcs.items():
        job_id = _job_id(client, calc.id, executor)
        assert job_id, client.show(calc.id)
        assert slurm_env.job(job_id)["ExitCode"] == f"{code}:0"


def test_kill9_of_the_poller_reattaches_to_the_batch_job(
    api_server: RunningServer,
    client: Client,
    slurm_env: SlurmCluster,
    executor: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    counter = tmp_path / "runs.txt"
    config, log = _poller_config(api_server, tmp_path, "sample", COUNTING, executor)
    first = start_poller(config, log=log)
    calc = client.submit("site-a", "sample", [str(counter), "4"], [])
    wait_for(lambda: counter.exists(), 30)  # the job runs
    wait_for(lambda: bool(_job_id(client, calc.id, executor)), 10)
    job_id = _job_id(client, calc.id, executor)
    assert slurm_env.job(job_id)["JobName"] == f"extcomp-{calc.id}"[:60]

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert slurm_env.job(job_id)["JobState"] == "RUNNING"  # the job outlives the poller
    second = start_poller(config, "--once", log=log)
    assert second.wait(timeout=60) == 0, log.read_text()
    final = client.wait(calc.id, timeout=20)
    assert final.state == "succeeded", (final, log.read_text())
    assert counter.read_text() == "run\n"
    assert slurm_env.jobs_named(f"extcomp-{calc.id}"[:60]) == [job_id]
    assert "out.txt" in [r.name for r in final.results]

    # The job id stays in the calc record: `calcs show` tells the site which job to look at.
    code = client_main(
        [
            "calcs",
            "show",
            calc.id,
            "--url",
            api_server.url,
            "--ca-file",
            str(api_server.ca_file),
            "--token-file",
            str(tmp_path / "token"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"as {executor} job {job_id}" in out, out


def test_a_cancel_from_the_workflow_side_reaches_the_scheduler(
    api_server: RunningServer,
    client: Client,
    slurm_env: SlurmCluster,
    executor: str,
    tmp_path: Path,
) -> None:
    """scancel (slurm) or qdel (pbs): either way the cluster's record says CANCELLED."""
    config, log = _poller_config(api_server, tmp_path, "sleep", SLEEP, executor)
    poller = start_poller(config, "--once", log=log)
    calc = client.submit("site-a", "sleep", ["120"], [])
    wait_for(lambda: bool(_job_id(client, calc.id, executor)), 30)
    job_id = _job_id(client, calc.id, executor)
    wait_for(lambda: slurm_env.job(job_id)["JobState"] == "RUNNING", 30)
    client.cancel(calc.id)
    assert poller.wait(timeout=60) == 0, log.read_text()
    assert slurm_env.job(job_id)["JobState"] == "CANCELLED"
    assert client.show(calc.id).state == "cancelled"
