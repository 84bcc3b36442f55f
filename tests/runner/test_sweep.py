"""`extcomp-ssh sweep` through the forced-command gate of the real sshd: orphaned work dirs go,
a running step's dir, a planted symlink and a foreign dir stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.sshd import SshHost

DAY = 86400.0


def helper(ssh_host: SshHost, *args: str) -> dict[str, Any]:
    """The helper run directly on the "host" (this machine), to set up work dirs."""
    out = subprocess.run(
        [
            sys.executable,
            ssh_host.helper,
            "--base",
            str(ssh_host.base),
            "--site-dir",
            str(ssh_host.site_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return answer


def age(path: Path, days: float) -> None:
    """Set the mtimes the helper judges activity by (lstat: a symlink itself, not its target)."""
    when = time.time() - days * DAY
    for p in (path, path / ".extcomp", *(path / ".extcomp").glob("*")):
        if os.path.lexists(p):
            os.utime(p, (when, when), follow_symlinks=False)


def sweep(ssh_host: SshHost, *flags: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "sweep",
            ssh_host.target,
            *ssh_host.cli_flags(gated=True),
            "--json",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


@pytest.mark.slow
def test_sweep_removes_only_orphans(ssh_host: SshHost, tmp_path: Path) -> None:
    base = ssh_host.base
    ids = {name: str(uuid.uuid4()) for name in ("created", "exited", "running", "recent")}
    for work in ids.values():
        helper(ssh_host, "mkdir", work)
    ended = helper(ssh_host, "run", "--entry", "test_entry.sh", "--wait", "20", ids["exited"])
    assert ended["state"] == "exited"
    started = helper(
        ssh_host, "run", "--entry", "test_entry.sh", ids["running"], "--", "await", "stop"
    )
    assert started["state"] == "running"
    # A symlink named like a work dir, to a dir outside the base that looks like one, and a
    # dir of the right name without the helper's marker: neither is the helper's to remove.
    outside = tmp_path / "outside"
    (outside / ".extcomp").mkdir(parents=True)
    (outside / "precious.txt").write_text("keep me\n")
    planted, foreign = str(uuid.uuid4()), str(uuid.uuid4())
    (base / planted).symlink_to(outside)
    (base / foreign).mkdir()
    try:
        for name in ("created", "exited", "running"):
            age(base / ids[name], 3)
        age(outside, 3)
        age(base / planted, 3)
        age(base / foreign, 3)
        mine = set(ids.values()) | {planted, foreign}

        dry = sweep(ssh_host, "--older-than", "1", "--dry-run")
        listed = {d["id"]: d for d in dry["dirs"] if d["id"] in mine}
        assert dry["dry_run"] is True and dry["removed"] == 0
        assert listed[ids["created"]]["action"] == "would remove"
        assert listed[ids["exited"]]["action"] == "would remove"
        assert all((base / work).is_dir() for work in ids.values())

        report = sweep(ssh_host, "--older-than", "1")
        swept = {d["id"]: d for d in report["dirs"] if d["id"] in mine}
        assert swept[ids["created"]]["action"] == "removed"
        assert swept[ids["created"]]["state"] == "created"
        assert swept[ids["exited"]]["action"] == "removed"
        assert swept[ids["running"]]["action"] == "skipped"
        assert "still runs" in swept[ids["running"]]["why"]
        assert swept[planted]["action"] == "skipped"
        assert swept[foreign]["action"] == "skipped"
        assert ids["recent"] not in swept  # idle for less than a day: not even listed
        assert not (base / ids["created"]).exists() and not (base / ids["exited"]).exists()
        assert (base / ids["running"]).is_dir() and (base / ids["recent"]).is_dir()
        assert (base / planted).is_symlink() and (outside / "precious.txt").is_file()
        assert (base / foreign).is_dir()
    finally:
        (base / ids["running"] / "stop").touch()  # let the program end
        deadline = time.monotonic() + 20
        while helper(ssh_host, "status", ids["running"])["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for work in (ids["running"], ids["recent"]):
            helper(ssh_host, "clean", work)
        (base / planted).unlink()
        (base / foreign).rmdir()


def test_sweep_refuses_bad_days(ssh_host: SshHost) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "sweep",
            ssh_host.target,
            *ssh_host.cli_flags(gated=True),
            "--older-than",
            "-2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "give a number of days" in out.stderr and "Traceback" not in out.stderr
