"""SSH connection hygiene: new connections to one host spaced by a minimum interval shared by
concurrent processes (real extcomp-ssh processes against the real sshd)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import sshgate
from runner.errors import UsageError
from runner.steps import HostSpec
from tests.fixtures.sshd import SshHost

STAMP_RE = re.compile(r"ssh gate: new connection to \S+ at (\d+\.\d+)")


def _take_turn(state: str, interval: float, out: multiprocessing.Queue[float]) -> None:
    os.environ["EXTCOMP_STATE_DIR"] = state
    host = HostSpec.parse("nobody@h.example:2222")
    sshgate.wait_turn(host, needed=lambda: True, interval=interval)
    out.put(float((sshgate.gate_dir() / f"{sshgate.host_name(host)}.last").read_text()))


def test_turns_are_spaced_across_processes(tmp_path: Path) -> None:
    """Four processes asking at once get turns at least the interval apart (the recorded
    times, not how long the test took)."""
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[float] = ctx.Queue()
    procs = [
        ctx.Process(target=_take_turn, args=(str(tmp_path / "state"), 0.3, out)) for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    stamps = sorted(out.get(timeout=5) for _ in procs)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) == 4 and min(gaps) >= 0.3 - 1e-3, gaps


def test_no_turn_when_a_connection_opened_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXTCOMP_STATE_DIR", str(tmp_path))
    host = HostSpec.parse("h.example")
    sshgate.wait_turn(host, needed=lambda: True, interval=0.2)
    stamp = sshgate.gate_dir() / f"{sshgate.host_name(host)}.last"
    first = stamp.read_text()
    sshgate.wait_turn(host, needed=lambda: False, interval=0.2)
    assert stamp.read_text() == first  # nothing recorded: no connection was opened
    assert sshgate.wait_turn(host, needed=lambda: True, interval=0) == 0.0


def test_interval_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sshgate.ENV, raising=False)
    assert sshgate.min_interval() == sshgate.DEFAULT_MIN_INTERVAL_S
    monkeypatch.setenv(sshgate.ENV, "2.5")
    assert sshgate.min_interval() == 2.5
    for bad in ("-1", "soon", "nan", "1e9"):
        monkeypatch.setenv(sshgate.ENV, bad)
        with pytest.raises(UsageError, match="is not a number of seconds") as err:
            sshgate.min_interval()
        assert err.value.exit_code == 2


def _accepted(log: Path) -> int:
    return log.read_text(errors="replace").count("Accepted publickey")


@pytest.mark.slow
def test_concurrent_steps_space_their_connections(ssh_host: SshHost, tmp_path: Path) -> None:
    """Three `extcomp-ssh check` processes at once, each needing its own connection (its own
    known_hosts file, so its own ControlMaster): sshd accepts three logins, and the gate's
    recorded connection times are at least the interval apart."""
    interval = 0.8
    before = _accepted(ssh_host.log)
    procs = []
    for i in range(3):
        known = tmp_path / f"known_hosts.{i}"
        shutil.copy(ssh_host.known_hosts, known)
        flags = ssh_host.cli_flags(gated=True)
        flags[flags.index("--known-hosts") + 1] = str(known)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "runner.cli",
                    "-v",
                    "--ssh-min-interval",
                    str(interval),
                    "check",
                    ssh_host.target,
                    *flags,
                    "--entry",
                    "test_entry.sh",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    stamps = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        stamps += [float(m) for m in STAMP_RE.findall(err)]
    assert len(stamps) == 3, stamps
    stamps.sort()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= interval - 1e-3, gaps
    assert _accepted(ssh_host.log) - before >= 3  # each really logged in to sshd


def test_an_unusable_state_dir_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir\n")
    monkeypatch.setenv("EXTCOMP_STATE_DIR", str(blocker))
    with pytest.raises(UsageError, match="cannot use the ssh connection lock") as err:
        sshgate.wait_turn(HostSpec.parse("h.example"), needed=lambda: True, interval=1)
    assert "\n" not in err.value.reason
