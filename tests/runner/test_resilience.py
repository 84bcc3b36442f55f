"""A step survives a broken connection, a killed controller and Ctrl-C (real sshd, processes)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.driver import run_step
from runner.execute import control_path
from runner.record import StepRecord, StepStore
from runner.steps import Outcome
from tests.fixtures.sshd import SshHost
from tests.runner.conftest import SpecFactory

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float = 60, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def running_on_host(ssh_host: SshHost) -> Callable[[], StepRecord | None]:
    """A predicate: the step's program has been started on the host (seen on its disk)."""

    def check() -> StepRecord | None:
        records = StepStore().list()
        if records and (ssh_host.base / records[0].work_id / ".extcomp" / "started.json").exists():
            return records[0]
        return None

    return check


def children(pid: int) -> list[int]:
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
    return kids + [g for k in kids for g in children(k)]


def ssh_processes(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if cmdline.startswith(b"ssh") and str(path).encode() in cmdline:
                found.append(int(entry.name))
    return found


def program_runs(results: Path) -> int:
    return (results / "remote_program_exec.log").read_text().count("test_entry: cwd=")


def test_killing_the_controllers_ssh_does_not_kill_the_calculation(
    make_spec: SpecFactory, ssh_host: SshHost
) -> None:
    spec = make_spec("sleep", "4", "write", "out.bin", "1", "exit", "5")
    box: dict[str, object] = {}
    worker = threading.Thread(target=lambda: box.update(result=run_step(spec)))
    worker.start()
    wait_for(running_on_host(ssh_host), what="the program to start")
    time.sleep(0.5)
    killed = ssh_processes(control_path(spec.host))
    assert killed, "the step's ssh connection should be up while it waits"
    for pid in killed:  # a mux client may end with its master before its own turn comes
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.join(timeout=120)
    result = box["result"]
    assert result.exit_code == 5 and result.outcome == Outcome.FAILED  # type: ignore[attr-defined]
    assert (spec.results_dir / "out.bin").stat().st_size == 1 << 20
    assert program_runs(spec.results_dir) == 1


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner.cli", *args]


def cli_args(spec) -> list[str]:  # type: ignore[no-untyped-def]
    host = spec.host
    return [
        "--host",
        f"{host.user}@{host.host}:{host.port}",
        "--key",
        str(host.key),
        "--known-hosts",
        str(host.known_hosts),
        "--helper",
        spec.helper,
        "--remote-base",
        spec.remote_base,
        "--entry",
        spec.entry,
        "--results",
        str(spec.results_dir),
    ]


def test_resume_after_the_controller_was_killed(make_spec: SpecFactory, ssh_host: SshHost) -> None:
    spec = make_spec()
    proc = subprocess.Popen(
        cli("run", *cli_args(spec), "--", "sleep", "3", "write", "r.bin", "1", "exit", "7"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    record = wait_for(running_on_host(ssh_host), what="the program to start")
    for pid in [proc.pid, *children(proc.pid)]:  # the controller dies with all it started
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not spec.results_dir.exists()
    out = subprocess.run(cli("resume", record.step_id), capture_output=True, text=True, timeout=120)
    assert out.returncode == 7, out.stderr
    assert "rc=7" in out.stderr
    assert (spec.results_dir / "r.bin").stat().st_size == 1 << 20
    assert program_runs(spec.results_dir) == 1, "the program is never started twice"


def test_ctrl_c_is_clean_and_resumable(make_spec: SpecFactory, ssh_host: SshHost) -> None:
    spec = make_spec()
    proc = subprocess.Popen(
        cli("run", *cli_args(spec), "--", "sleep", "3", "touch", "done.txt"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    record = wait_for(running_on_host(ssh_host), what="the program to start")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"extcomp-ssh resume {record.step_id}" in err
    assert "Traceback" not in err
    assert StepStore().load(record.step_id).outcome == Outcome.INTERRUPTED
    out = subprocess.run(cli("resume", record.step_id), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (spec.results_dir / "done.txt").exists()
