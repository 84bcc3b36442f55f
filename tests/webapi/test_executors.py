"""Executors with real processes: exit codes, logs, group kill, re-attach, batch argv."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from webapi.contract.calc import FileEntry
from webapi.poller.config import BatchPoll
from webapi.poller.executors import Outcome, Started, clean_env
from webapi.poller.executors.batch import BatchExecutor
from webapi.poller.executors.local import LocalExecutor
from webapi.poller.workdir import WorkDir, cleanup, collect_results

PY = sys.executable


def wait_outcome(
    ex: LocalExecutor | BatchExecutor, wd: WorkDir, st: Started, limit: float = 10
) -> Outcome:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        outcome = ex.poll(wd, st)
        if outcome is not None:
            return outcome
        time.sleep(0.05)
    raise AssertionError("program did not finish")


def test_runs_argv_in_work_dir_with_logs(tmp_path: Path) -> None:
    wd = WorkDir.for_calc(tmp_path, "c-1")
    ex = LocalExecutor()
    code = (
        "import os, sys; print('out', sys.argv[1:]); print('err', file=sys.stderr);"
        "open('result.txt', 'w').write(os.getcwd()); sys.exit(3)"
    )
    st = ex.start([PY, "-c", code, "a b", "$HOME;rm -rf /"], wd)
    outcome = wait_outcome(ex, wd, st)
    assert outcome == Outcome(3, None)
    assert (wd.cwd / "result.txt").read_text() == str(wd.cwd)
    # The args arrive verbatim: no shell ever sees them.
    assert "['a b', '$HOME;rm -rf /']" in wd.stdout.read_text()
    assert wd.stderr.read_text() == "err\n"
    names = [e.name for e in collect_results(wd.cwd, [])]
    assert names == ["extcomp-stderr.log", "extcomp-stdout.log", "result.txt"]


def test_missing_program_is_127(tmp_path: Path) -> None:
    wd = WorkDir.for_calc(tmp_path, "c-2")
    ex = LocalExecutor()
    outcome = wait_outcome(ex, wd, ex.start([str(tmp_path / "nope")], wd))
    assert outcome.exit_code == 127
    assert "cannot start" in (outcome.reason or "")


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    wd = WorkDir.for_calc(tmp_path, "c-3")
    ex = LocalExecutor()
    # The program starts a grandchild that would outlive a plain kill of the child.
    code = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)']);"
        "open('grandchild.pid', 'w').write(str(p.pid)); time.sleep(60)"
    )
    st = ex.start([PY, "-c", code], wd)
    pid_file = wd.cwd / "grandchild.pid"
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    ex.stop(wd, st, grace=2)
    outcome = wait_outcome(ex, wd, st)
    assert outcome.exit_code == 128 + 15
    assert "SIGTERM" in (outcome.reason or "")
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(grandchild, 0)
            time.sleep(0.02)


def test_reattach_from_a_new_executor(tmp_path: Path) -> None:
    """A restarted poller (new executor, not the parent) still learns the exit code."""
    wd = WorkDir.for_calc(tmp_path, "c-4")
    first = LocalExecutor()
    st = first.start([PY, "-c", "import time, sys; time.sleep(0.5); sys.exit(7)"], wd)
    second = LocalExecutor()
    assert second.poll(wd, st) is None
    assert wait_outcome(second, wd, st) == Outcome(7, None)
    first.poll(wd, st)  # reap


def test_vanished_program_is_lost(tmp_path: Path) -> None:
    wd = WorkDir.for_calc(tmp_path, "c-5")
    wd.create()
    outcome = LocalExecutor().poll(wd, Started(pid=2**22 + 12345))
    assert outcome is not None and outcome.lost


def test_secrets_not_passed_to_program() -> None:
    env = clean_env({"PATH": "/bin", "EXTCOMP_API_TOKEN": "t", "EXTCOMP_POLLER_PASSWORD": "p"})
    assert env == {"PATH": "/bin"}


def test_results_skip_unchanged_inputs_and_symlinks(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    (cwd / "sub").mkdir(parents=True)
    (cwd / "in.txt").write_text("input")
    (cwd / "changed.txt").write_text("new")
    (cwd / "sub" / "out.dat").write_bytes(b"\x00\x01")
    (cwd / "link").symlink_to("/etc/passwd")
    inputs = [
        FileEntry("in.txt", 5, "bca20547e94049e1ffea27223581c567022a5774bb7ec3eca2b28ed8fb3b4b29"),
        FileEntry("changed.txt", 3, "0" * 64),
    ]
    import hashlib

    inputs[0] = FileEntry("in.txt", 5, hashlib.sha256(b"input").hexdigest())
    names = [e.name for e in collect_results(cwd, inputs)]
    assert names == ["changed.txt", "sub/out.dat"]


def test_cleanup_removes_only_old_dirs(tmp_path: Path) -> None:
    old, new, keep = tmp_path / "c-old", tmp_path / "c-new", tmp_path / "c-keep"
    for d in (old, new, keep):
        (d / "work").mkdir(parents=True)
        (d / "work" / "f").write_text("x")
    past = time.time() - 40 * 86400
    for d in (old, keep):
        for p in (d, d / "work", d / "work" / "f"):
            os.utime(p, (past, past))
    removed = cleanup(tmp_path, 30, keep=["c-keep"])
    assert removed == [old]
    assert new.exists() and keep.exists()


def _fake_tool(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text(f"#!{PY}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_slurm_executor_with_fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sbatch/sacct stand-ins: checks the argv handed to Slurm and the batch script itself."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.log"
    _fake_tool(
        bindir,
        "sbatch",
        f"""import subprocess, sys
open({str(log)!r}, 'a').write(repr(sys.argv[1:]) + '\\n')
opts = dict(a.split('=', 1) for a in sys.argv[1:-1] if '=' in a)
out, err = open(opts['--output'], 'w'), open(opts['--error'], 'w')
subprocess.run([sys.argv[-1]], stdout=out, stderr=err)
print('4242;cluster')
""",
    )
    _fake_tool(bindir, "sacct", "print('COMPLETED')\n")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    wd = WorkDir.for_calc(tmp_path / "work", "c-6")
    ex = BatchExecutor("slurm", poll=BatchPoll(first=0, max=0.1))
    st = ex.start(
        [PY, "-c", "import sys; print('hi'); sys.exit(5)", "x y"], wd, ["--partition=debug"]
    )
    assert st == Started(job_id="4242")
    assert wait_outcome(ex, wd, st) == Outcome(5, None)
    argv = log.read_text()
    assert "'--parsable'" in argv and "'--partition=debug'" in argv and "batch-job.py" in argv
    assert wd.stdout.read_text() == "hi\n"
