"""Fault drills: each test makes the real fault happen (sshd killed mid-pull, the runner killed
with SIGKILL, a relative path resumed from elsewhere, a secret left behind) and checks the promise.

The drills run against an sshd of their own, so killing it touches no other test's connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from runner.driver import run_step
from runner.record import StepRecord, StepStore
from runner.steps import Outcome, StepSpec
from tests.fixtures.sshd import SshHost, descendants, kill_sshd, restart_sshd, start_sshd
from tests.runner.conftest import host_spec

pytestmark = [pytest.mark.drill, pytest.mark.slow]
T = TypeVar("T")


@dataclass
class DrillHost:
    """The drills' own external host; `restart()` kills its sshd with every session."""

    host: SshHost

    def restart(self) -> None:
        self.host = restart_sshd(self.host)

    def spec(self, results: Path, *args: str, **changes: Any) -> StepSpec:
        spec = StepSpec(
            host=host_spec(self.host, "gated"),
            results_dir=results,
            args=args,
            entry="test_entry.sh",
            helper=self.host.helper,
            remote_base=str(self.host.base),
            reconnect_attempts=3,
        )
        return replace(spec, **changes)


# The drill host's never-return list, and a secret of the site that its program copies around.
NEVER_RETURN = "*.secret\nlicence/**\n"
TOKEN = "licence-server-token-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def drill() -> Iterator[DrillHost]:
    root = Path(tempfile.mkdtemp(prefix="extcomp-drill-"))
    box = DrillHost(start_sshd(root / "host"))
    (box.host.site_dir / "never-return.conf").write_text(NEVER_RETURN)
    (box.host.site_dir / "licence-token").write_text(TOKEN + "\n")
    try:
        yield box
    finally:
        kill_sshd(box.host)
        shutil.rmtree(root, ignore_errors=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path: Path, mib: int) -> Path:
    """A file of `mib` MiB of random bytes, written here (a program that copies it ends fast)."""
    with path.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(1 << 20))
    return path


def pull_literal_bytes(step_id: str) -> list[int]:
    """rsync's "Literal data" (bytes really sent) of each pull that completed, from the step's
    ansible-runner event log."""
    sent = []
    artifacts = StepStore().step_dir(step_id) / "ansible" / "artifacts"
    for path in sorted(artifacts.glob("*/job_events/*.json")):
        event = json.loads(path.read_text())
        data = event.get("event_data") or {}
        if (
            event.get("event") == "runner_on_ok"
            and data.get("task") == "Pull the whole work dir back"
        ):
            found = re.search(r"Literal data: ([\d,]+) bytes", str(data["res"].get("stdout", "")))
            assert found, data["res"].get("stdout")
            sent.append(int(found.group(1).replace(",", "")))
    return sent


# ---- item 10: a connection lost during the pull -------------------------------------------------


@pytest.mark.parametrize("puller", ["runner", "playbook"])
def test_pull_cut_by_an_sshd_restart_reconnects_and_completes(
    drill: DrillHost, tmp_path: Path, puller: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sshd dies with its sessions while the result streams back, and comes back on its port.
    The pull is cut where it runs: the runner's own, beside the playbook, of a program that
    ended within the start's answer (the playbook's pull task then finishes it, in the same
    run); or the playbook's, of a program still running at that answer (a new run, after the
    reconnect, finishes it)."""
    if puller == "playbook":
        monkeypatch.setattr("runner.driver.START_WAIT_S", 0)
    # Random bytes made here and copied by the program: it ends within the start's answer
    # (5 s) even on a loaded machine, as the runner's case needs.
    made = random_file(tmp_path / "made.bin", 64)
    spec = drill.spec(tmp_path / "results", "copy", str(made), "big.bin")
    cut, stop = threading.Event(), threading.Event()

    def cut_mid_pull() -> None:
        # rsync receives into a temp file (.big.bin.XXXXXX) inside the hidden partial dir.
        while not stop.is_set():
            for tmp in tmp_path.glob(".results.*.partial/.big.bin.*"):
                try:
                    received = tmp.stat().st_size
                except FileNotFoundError:
                    continue
                if received > 8 << 20:
                    drill.restart()
                    cut.set()
                    return
            time.sleep(0.005)

    watcher = threading.Thread(target=cut_mid_pull)
    watcher.start()
    try:
        result = run_step(spec)
    finally:
        stop.set()
        watcher.join()
    assert cut.is_set(), "the drill never fired: the pull ended before the cut"
    assert (result.outcome, result.exit_code) == (Outcome.SUCCEEDED, 0), result
    out = spec.results_dir
    assert sha256(out / "big.bin") == sha256(made)
    record = StepStore().load(result.step_id)
    if puller == "playbook":
        assert record.runs >= 2, "the pull was run again after reconnecting"
    else:
        run1 = StepStore().step_dir(result.step_id) / "ansible" / "artifacts" / "run001"
        found = [json.loads(p.read_text()) for p in run1.glob("job_events/*.json")]
        ok = {
            e["event_data"].get("task"): e["event_data"]["res"]
            for e in found
            if e["event"] == "runner_on_ok"
        }
        start = json.loads(ok["Start the entry script, detached from this connection"]["stdout"])
        assert start["state"] == "exited", "the program ended within the start's answer"
        pulled = ok["Pull the whole work dir back"]
        assert "answered_beside" not in pulled, "the runner's pull was cut, the task finished it"
    # It resumed: what arrived before the cut was not sent again.
    assert pull_literal_bytes(result.step_id)[-1] < (64 - 8) << 20
    assert not list(tmp_path.glob(".results.*")), "no partial dir is left behind"
    assert not (out / ".extcomp-rsync-partial").exists()


# ---- shared by the drills that kill the runner ---------------------------------------------------


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner.cli", *args]


_BACKGROUND: list[subprocess.Popen[bytes]] = []


def run_in_background(host: SshHost, *args: str) -> subprocess.Popen[bytes]:
    """`extcomp-ssh run` against the drill host as a process of its own, output discarded."""
    proc = subprocess.Popen(
        cli("run", *("--host", host.target, *host.cli_flags(), "--entry", "test_entry.sh"), *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _BACKGROUND.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_runner_outlives_its_test() -> Iterator[None]:
    """A drill that fails before its kill leaves its runner running: end it with the test, so
    it neither works on in the next test's store nor is reaped by a stranger."""
    yield
    while _BACKGROUND:
        proc = _BACKGROUND.pop()
        if proc.poll() is None:
            kill_tree(proc.pid)
        proc.wait()


def wait_for(predicate: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def started_on_host(host: SshHost) -> Callable[[], StepRecord | None]:
    """A predicate: the one recorded step's program runs on the host (seen on the host's disk)."""

    def check() -> StepRecord | None:
        records = StepStore().list()
        if records and (host.base / records[0].work_id / ".extcomp" / "started.json").exists():
            return records[0]
        return None

    return check


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it (what the old runner needed to die cleanly)."""
    for victim in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


# ---- item 11: relative paths, resumed from another dir -------------------------------------------


@pytest.mark.parametrize("made_by", ["this version", "0.1"])
def test_resume_from_another_dir_finds_relative_paths(
    drill: DrillHost, tmp_path: Path, made_by: str
) -> None:
    """A step started with relative --key/--known-hosts/--input/--results, its runner killed, is
    resumed from another dir; "0.1" rewrites the record as 0.1 wrote it (relative, no cwd)."""
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    shutil.copy(drill.host.gated_key, first / "key")
    shutil.copy(drill.host.known_hosts, first / "kh")
    (first / "in.txt").write_text("input\n")
    host = drill.host
    proc = subprocess.Popen(
        cli(
            "run",
            *("--host", host.target, "--key", "key", "--known-hosts", "kh"),
            *("--helper", host.helper, "--remote-base", str(host.base)),
            *("--entry", "test_entry.sh", "--input", "in.txt", "--results", "out"),
            *("--", "copy", "in.txt", "copied.txt", "await", "go"),
        ),
        cwd=first,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    record = wait_for(started_on_host(host), "the program to start")
    kill_tree(proc.pid)
    proc.wait()
    if made_by == "0.1":
        path = StepStore().step_dir(record.step_id) / "record.yaml"
        data = yaml.safe_load(path.read_text())
        data.pop("cwd", None)
        data["spec"]["host"].update(key="key", known_hosts="kh")
        data["spec"].update(results_dir="out", inputs=["in.txt"])
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    (host.base / record.work_id / "go").touch()
    out = subprocess.run(
        cli("resume", record.step_id), cwd=elsewhere, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert (first / "out" / "copied.txt").read_text() == "input\n"
    assert not (elsewhere / "out").exists()
    again = StepStore().load(record.step_id)
    assert again.cwd is not None and Path(again.cwd).resolve() == first.resolve()
    assert again.spec["results_dir"] == str(Path(again.cwd) / "out")


# ---- item 12: kill -9 of the runner --------------------------------------------------------------


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def marked(*marks: str) -> set[int]:
    """Processes whose command line carries one of the marks (the step id, the work id)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and any(m in cmdline(int(entry.name)) for m in marks):
            found.add(int(entry.name))
    return found


def test_kill_9_of_the_runner_takes_ansible_and_its_ssh_along(
    drill: DrillHost, tmp_path: Path
) -> None:
    """The runner dies by SIGKILL while a `wait` call is in flight; nothing it started survives
    (the shared ControlMaster aside, which detached by design), and `resume` finishes the step."""
    host = drill.host
    results = tmp_path / "results"
    proc = run_in_background(
        host, "--results", str(results), "--", "touch", "early.txt", "await", "go", "exit", "4"
    )
    ours: set[int] = set()
    try:
        record = wait_for(started_on_host(host), "the program to start")
        marks = (record.step_id, record.work_id)

        def waiting() -> set[int] | None:
            tree = set(descendants(proc.pid))
            calls = [p for p in tree if f"wait {record.work_id}" in cmdline(p)]
            return tree | marked(*marks) if calls else None

        ours = wait_for(waiting, "a `wait` call in flight") - {os.getpid()}
        names = {Path(cmdline(p).split(" ", 1)[0]).name for p in ours}
        assert {"ssh"} <= names, names
        assert any("ansible-playbook" in cmdline(p) for p in ours)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

        def all_gone() -> bool:
            return not {p for p in ours | marked(*marks) if alive(p)} - {os.getpid()}

        try:
            wait_for(all_gone, "the runner's children to end", timeout=20)
        except AssertionError:
            left = {p: cmdline(p)[:120] for p in ours | marked(*marks) if alive(p)}
            raise AssertionError(f"survived the runner: {left}") from None
        assert (host.base / record.work_id / ".extcomp" / "started.json").exists()
        assert not (host.base / record.work_id / ".extcomp" / "status.json").exists(), (
            "the program runs on, detached"
        )
    finally:
        for pid in ours:
            if alive(pid):
                kill_tree(pid)
    (host.base / record.work_id / "go").touch()
    out = subprocess.run(cli("resume", record.step_id), capture_output=True, text=True, timeout=120)
    assert out.returncode == 4, out.stderr
    assert (results / "early.txt").exists()
    log = (results / "remote_program_exec.log").read_text()
    assert log.count("test_entry: cwd=") == 1, "the program ran once"


def kill_9_during_side_rsync(proc: subprocess.Popen[bytes], direction: str) -> None:
    """SIGKILL the runner once its own rsync (push or pull, beside the playbook) is in flight,
    and check that the rsync, its guard and its ssh die with it."""
    in_flight: set[int] = set()
    try:

        def side_rsync() -> set[int] | None:
            tree = descendants(proc.pid)
            guard = [p for p in tree if f"guard-{direction}-" in cmdline(p)]
            rsyncs = [p for p in tree if cmdline(p).startswith("rsync ")]
            return {*guard, *rsyncs, *descendants(guard[0])} if guard and rsyncs else None

        in_flight = wait_for(side_rsync, f"the runner's own {direction}", timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        try:
            wait_for(lambda: not [p for p in in_flight if alive(p)], f"the {direction} to end", 20)
        except AssertionError:
            left = {p: cmdline(p)[:120] for p in in_flight if alive(p)}
            raise AssertionError(f"survived the runner: {left}") from None
    finally:
        for pid in in_flight:
            if alive(pid):
                kill_tree(pid)


def test_kill_9_during_the_push_beside_the_start_up(drill: DrillHost, tmp_path: Path) -> None:
    """The runner dies by SIGKILL while its own push (sent beside ansible-playbook's start-up)
    is in flight: that rsync dies with it (the guard), the program never started, and `resume`
    pushes the rest and finishes the step with the file intact, the program run once."""
    host = drill.host
    big = random_file(tmp_path / "in.bin", 256)
    results = tmp_path / "results"
    proc = run_in_background(
        host, "--input", str(big), "--results", str(results), "--", "sha", "in.bin"
    )
    kill_9_during_side_rsync(proc, "push")
    record = StepStore().list()[0]
    assert "start" not in record.phases_done
    assert not (host.base / record.work_id / ".extcomp" / "started.json").exists()
    out = subprocess.run(cli("resume", record.step_id), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert (results / "in.bin.sha256").read_text().split()[0] == sha256(big)
    log = (results / "remote_program_exec.log").read_text()
    assert log.count("test_entry: cwd=") == 1, "the program ran once"


def test_kill_9_during_the_pull_beside_the_playbook(drill: DrillHost, tmp_path: Path) -> None:
    """The runner dies by SIGKILL while its own pull (of a program that ended within the
    start's answer) is in flight: that rsync dies with it, the step is not recorded as pulled
    and the work dir stays on the host; `resume` pulls and finishes the step with the result
    intact, the program run once."""
    host = drill.host
    # The program must end within the start's answer (5 s) even on a loaded CI machine, or the
    # playbook pulls instead of the runner: it copies random bytes made here (a page-cache copy)
    # rather than drawing and hashing 256 MiB on the host.
    made = random_file(tmp_path / "made.bin", 256)
    results = tmp_path / "results"
    proc = run_in_background(host, "--results", str(results), "--", "copy", str(made), "out.bin")
    kill_9_during_side_rsync(proc, "pull")
    record = StepStore().list()[0]
    assert "pull" not in record.phases_done
    assert (host.base / record.work_id / "out.bin").is_file(), "not cleaned before the pull"
    out = subprocess.run(cli("resume", record.step_id), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert sha256(results / "out.bin") == sha256(made)
    log = (results / "remote_program_exec.log").read_text()
    assert log.count("test_entry: cwd=") == 1, "the program ran once"
    assert not (host.base / record.work_id).exists(), "cleaned after the recorded pull"


# ---- item 9: what the site says never leaves its host, however the program ends ------------------

SECRET_NAMES = {"licence.secret", "key.secret", "server", "looks-fine.txt"}


def leaks(root: Path) -> list[str]:
    """Never-return names under root, symlinks to them, and files holding the site's token."""
    found = []
    for path in root.rglob("*"):
        if path.name in SECRET_NAMES:
            found.append(str(path))
        elif path.is_symlink():
            if "secret" in os.readlink(path) or "licence/" in os.readlink(path):
                found.append(f"{path} -> {os.readlink(path)}")
        elif path.is_file():
            with contextlib.suppress(FileNotFoundError):  # rsync's temp file, renamed meanwhile
                if TOKEN in path.read_text(errors="replace"):
                    found.append(f"{path} (holds the token)")
    return found


def watch_for_leaks(where: Path) -> tuple[threading.Event, list[str], threading.Thread]:
    """Look into every partial dir under `where` while a step runs, for a leak seen in flight."""
    stop, seen = threading.Event(), []

    def look() -> None:
        while not stop.is_set():
            for partial in where.glob(".*.partial"):
                # FileNotFoundError: renamed into place (or a temp file renamed) while we looked
                with contextlib.suppress(FileNotFoundError):
                    seen.extend(x for x in leaks(partial) if x not in seen)
            time.sleep(0.01)

    thread = threading.Thread(target=look)
    thread.start()
    return stop, seen, thread


ENDINGS = {
    "normal exit": (["exit", "0"], None, 0),
    "non-zero exit": (["exit", "3"], None, 3),
    "timeout": (["sleep", "60"], 1.5, 124),
    "runner killed, then resume": (["await", "go", "exit", "0"], None, 0),
    "normal exit, unrestricted key": (["exit", "0"], None, 0),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_never_return_files_never_reach_the_workflow_side(
    drill: DrillHost, tmp_path: Path, ending: str
) -> None:
    """The program leaves secrets (by pattern, in a subdir, in a listed dir, and behind an
    innocent symlink) and does not clean up; the site's list keeps them on the host in every
    ending, while the other results come back."""
    host = drill.host
    token = str(host.site_dir / "licence-token")
    tail, timeout, code = ENDINGS[ending]
    program = [
        *("copy", token, "licence.secret", "mkdir", "deep/er", "copy", token, "deep/er/key.secret"),
        *("mkdir", "licence", "copy", token, "licence/server"),
        *("link", "looks-fine.txt", "licence.secret", "put", "result.txt", "fine"),
        *tail,
    ]
    results = tmp_path / "results"
    stop, seen, watcher = watch_for_leaks(tmp_path)
    try:
        if ending == "runner killed, then resume":
            proc = run_in_background(host, "--results", str(results), "--", *program)
            record = wait_for(started_on_host(host), "the program to start")
            kill_tree(proc.pid)
            proc.wait()
            (host.base / record.work_id / "go").touch()
            out = subprocess.run(
                cli("resume", record.step_id), capture_output=True, text=True, timeout=120
            )
            assert out.returncode == code, out.stderr
        else:
            spec = drill.spec(results, *program, timeout=timeout)
            if ending.endswith("unrestricted key"):
                spec = replace(spec, host=host_spec(host, "plain"))
            assert run_step(spec).exit_code == code
    finally:
        stop.set()
        watcher.join()
    assert (results / "result.txt").read_text() == "fine\n"
    assert (results / "deep" / "er").is_dir() and (results / "licence").is_dir()
    assert leaks(results) == []
    assert seen == [], "nothing of it was ever in the partial dir either"
