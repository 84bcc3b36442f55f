"""extcomp-remote run directly (no ssh): verbs, idempotence, timeouts, and the gate's parsing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runner import resources
from tests.fixtures.sshd import install_site

HELPER = str(resources.helper_script())


@pytest.fixture
def host(tmp_path: Path) -> tuple[Path, Path]:
    site, base = tmp_path / "site", tmp_path / "base"
    base.mkdir()
    install_site(site)
    return site, base


def helper(
    host: tuple[Path, Path],
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    site, base = host
    return subprocess.run(
        [sys.executable, HELPER, "--base", str(base), "--site-dir", str(site), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def answer(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_lifecycle_and_idempotence(host: tuple[Path, Path]) -> None:
    work = str(uuid.uuid4())
    first = answer(helper(host, "mkdir", work))
    assert first["created"] is True and first["rsync_dir"] == first["dir"]
    assert answer(helper(host, "mkdir", work))["created"] is False  # retried mkdir is fine
    assert (Path(str(first["dir"])).stat().st_mode & 0o777) == 0o700
    assert answer(helper(host, "status", work))["state"] == "created"
    started = answer(
        helper(host, "run", "--entry", "test_entry.sh", work, "--", "sleep", "0.3", "exit", "4")
    )
    assert started["state"] in ("running", "exited")
    again = answer(helper(host, "run", "--entry", "test_entry.sh", work, "--", "exit", "0"))
    assert again["already_started"] is True, "a step never runs twice"
    done = answer(helper(host, "wait", work, "--max", "20"))
    assert (done["state"], done["rc"]) == ("exited", 4)
    assert answer(helper(host, "clean", work))["removed"] is True
    assert answer(helper(host, "clean", work))["removed"] is False


def test_a_killed_supervisor_not_yet_reaped_counts_as_lost(host: tuple[Path, Path]) -> None:
    """A SIGKILLed supervisor is a zombie until its parent reaps it: `status` must say "lost" at
    once (a batch step's `run` re-attaches only to a lost one), not "running"."""
    work = str(uuid.uuid4())
    made = answer(helper(host, "mkdir", work))
    zombie = os.fork()
    if zombie == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not become a zombie"
            time.sleep(0.01)
        started = {"pid": zombie, "supervisor": zombie, "started": time.time(), "ident": None}
        (Path(str(made["dir"])) / ".extcomp" / "started.json").write_text(json.dumps(started))
        assert answer(helper(host, "status", work))["state"] == "lost"
    finally:
        os.waitpid(zombie, 0)


def test_a_supervisor_ending_between_the_two_looks_is_not_lost(tmp_path: Path) -> None:
    """The supervisor writes its status and ends: a `status`/`wait` that read no status.json a
    moment before and then finds the supervisor gone must answer the status, not "lost" (seen
    in CI as a `run --wait` answering "lost" for a program that had exited 0). The window is
    forced here: the liveness check is where the supervisor finishes."""
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    loader = SourceFileLoader("extcomp_remote_under_test", HELPER)
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    remote = module_from_spec(spec)
    loader.exec_module(remote)
    state = tmp_path / ".extcomp"
    state.mkdir()
    (state / "started.json").write_text(json.dumps({"pid": 1, "supervisor": 1, "started": 0}))
    final = {"state": "exited", "rc": 0}

    def supervisor_ends_now(pid: int) -> bool:
        (state / "status.json").write_text(json.dumps(final))
        return False

    setattr(remote, "pid_alive", supervisor_ends_now)  # noqa: B010 (a module loaded from a script)
    assert remote.status_of(tmp_path) == final


def test_timeout_kills_the_program_group(host: tuple[Path, Path]) -> None:
    work = str(uuid.uuid4())
    answer(helper(host, "mkdir", work))
    answer(
        helper(
            host, "run", "--entry", "test_entry.sh", "--timeout", "0.5", work, "--", "sleep", "30"
        )
    )
    done = answer(helper(host, "wait", work, "--max", "20"))
    assert done["state"] == "timeout"
    assert done["rc"] == 128 + 15


def test_kill_verb_stops_a_running_program(host: tuple[Path, Path]) -> None:
    work = str(uuid.uuid4())
    answer(helper(host, "mkdir", work))
    answer(helper(host, "run", "--entry", "test_entry.sh", work, "--", "sleep", "30"))
    assert answer(helper(host, "kill", work))["state"] == "killed"


@pytest.mark.parametrize(
    ("entry", "code", "text"),
    [
        ("nope.sh", 127, "not found"),
        ("noexec_entry.sh", 126, "not executable"),
        ("../etc/passwd", 64, "bare file name"),
    ],
)
def test_entry_script_problems(host: tuple[Path, Path], entry: str, code: int, text: str) -> None:
    work = str(uuid.uuid4())
    answer(helper(host, "mkdir", work))
    proc = helper(host, "run", "--entry", entry, work)
    assert proc.returncode == code and text in proc.stderr


def test_bad_ids_and_foreign_dirs(host: tuple[Path, Path]) -> None:
    site, base = host
    for bad in ("../x", "/tmp", "abc", str(uuid.uuid4()).upper()):
        proc = helper(host, "mkdir", bad)
        assert proc.returncode == 65 and "bad work id" in proc.stderr
    planted = str(uuid.uuid4())
    (base / planted).symlink_to(site)  # a symlink planted where a work dir would go
    assert helper(host, "clean", planted).returncode == 66
    assert site.is_dir()
    plain = str(uuid.uuid4())
    (base / plain).mkdir()  # a dir without our marker
    assert helper(host, "run", plain).returncode == 66


def test_check_reports_the_set_up(host: tuple[Path, Path]) -> None:
    info = answer(helper(host, "check", "--entry", "test_entry.sh"))
    assert info["entry_executable"] is True and info["base_writable"] is True
    assert info["rsync"] == shutil.which("rsync")


def gate(host: tuple[Path, Path], command: str | None) -> subprocess.CompletedProcess[str]:
    site, base = host
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.run(
        [sys.executable, HELPER, "--gate", "--base", str(base), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


@pytest.mark.parametrize(
    "command",
    [
        None,
        "",
        "id",
        "extcomp-remote",
        "extcomp-remote rm -rf /",
        "'unclosed",
        "rsync --server . /etc",
        "rsync --server -a . ../../etc",
        "rsync --server -a . a b",
        "extcomp-remote --base /etc mkdir x",
    ],
)
def test_gate_refuses(host: tuple[Path, Path], command: str | None) -> None:
    proc = gate(host, command)
    assert proc.returncode == 77, (command, proc.stderr)
    assert proc.stderr.startswith("extcomp-remote: refused")


def test_gate_marks_rsync_paths_relative(host: tuple[Path, Path]) -> None:
    work = str(uuid.uuid4())
    made = json.loads(gate(host, f"/any/path/extcomp-remote mkdir {work}").stdout)
    assert made["rsync_dir"] == work
