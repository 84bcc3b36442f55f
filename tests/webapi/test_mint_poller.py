"""Our mint-mode poller and `extcomp-api wf` against a fake of the ORIGINAL server (in memory)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webapi.fake_mint_server import FakeMintServer
from tests.webapi.minthelp import (
    JP_STDERR,
    JP_STDOUT,
    finish_wf,
    run_wf,
    start_poller,
    start_wf,
    write_programs,
)

TOKEN = "ab" * 32  # a MInt API token: 64 hex digits
SITE = "site-x"
POLLER_STEPS = [
    "GET calc-request",
    "GET calc-params",
    "POST calc-params-complete",
    "POST calc-start",
    "POST calc-end",
    "POST send-results",
    "POST end-send",
]


@pytest.fixture
def fake() -> Iterator[FakeMintServer]:
    commands = ["sample", "fail", "nofile", "sleep", "copy", "rogue"]
    server = FakeMintServer(sites={SITE: commands}, tokens={TOKEN}).start()
    yield server
    server.stop()


@pytest.fixture
def programs(tmp_path: Path) -> dict[str, Path]:
    return write_programs(tmp_path / "bin")


def poller_calls(fake: FakeMintServer) -> list[str]:
    workflow = ("add-calcinfo", "allow-wait-calc", "calc-status", "calc-progress", "get-calc")
    return [c for c in fake.calls if not c.split()[1].startswith(workflow)]


def test_success_round_trip(
    fake: FakeMintServer, programs: dict[str, Path], tmp_path: Path
) -> None:
    wd = tmp_path / "wf"
    wd.mkdir()
    (wd / "in.txt").write_text("hello mint")
    poller = start_poller(fake.url, SITE, TOKEN, tmp_path / "p", programs, "--once")
    res = run_wf(fake.url, SITE, TOKEN, "sample", "in.txt", "out.txt", cwd=wd)
    assert res.code == 0, res.stderr
    assert poller.wait() == 0, poller.text()
    assert (wd / "out.txt").read_text() == "HELLO MINT"
    assert "hello from sample" in (wd / JP_STDOUT).read_text()
    assert "a warning" in (wd / JP_STDERR).read_text()
    assert not list(wd.glob(".*part")), "no partial files left"
    # One call per step, in the original's order, and no sleeping in between.
    calls = poller_calls(fake)
    assert calls[calls.index("GET calc-params") - 1 :] == POLLER_STEPS, calls
    calc = next(iter(fake.calcs.values()))
    assert (calc.progress, calc.status) == ("got return", "completed")
    assert TOKEN not in poller.text() and TOKEN not in res.stderr


def test_program_failure_delivers_logs(
    fake: FakeMintServer, programs: dict[str, Path], tmp_path: Path
) -> None:
    poller = start_poller(fake.url, SITE, TOKEN, tmp_path / "p", programs, "--once")
    res = run_wf(fake.url, SITE, TOKEN, "fail", "", "out.txt", cwd=tmp_path / "wf")
    assert res.code == 1 and "abnormally" in res.stderr, res.stderr
    assert poller.wait() == 0
    wd = tmp_path / "wf"
    assert "working" in (wd / JP_STDOUT).read_text()
    err = (wd / JP_STDERR).read_text()
    assert "boom: the solver diverged" in err and "exited with code 3" in err
    assert (wd / "out.txt").read_text() == "partial"  # what the program made still comes back
    assert next(iter(fake.calcs.values())).status == "abnormal"


def test_missing_result_is_reported_as_error(
    fake: FakeMintServer, programs: dict[str, Path], tmp_path: Path
) -> None:
    poller = start_poller(fake.url, SITE, TOKEN, tmp_path / "p", programs, "--once")
    res = run_wf(fake.url, SITE, TOKEN, "nofile", "", "out.txt:other.dat", cwd=tmp_path / "wf")
    assert poller.wait() == 0
    assert res.code == 1
    assert "result out.txt did not come back" in res.stderr, res.stderr
    files = next(iter(fake.calcs.values())).result_files or {}
    assert files["out.txt"]["mimetype1"] == "Error" and files["out.txt"]["content"] == ""
    assert "out.txt" in files["out.txt"]["mimetype2"]
    assert not (tmp_path / "wf" / "out.txt").exists()
    assert "made nothing" in (tmp_path / "wf" / JP_STDOUT).read_text()


def test_command_off_the_allow_list_is_refused(
    fake: FakeMintServer, programs: dict[str, Path], tmp_path: Path
) -> None:
    wd = tmp_path / "wf"
    wd.mkdir()
    (wd / "in.txt").write_text("x" * 1000)
    poller = start_poller(fake.url, SITE, TOKEN, tmp_path / "p", programs, "--once")
    res = run_wf(fake.url, SITE, TOKEN, "rogue", "in.txt", "out.txt", cwd=wd)
    assert poller.wait() == 0
    assert res.code == 1
    err = (wd / JP_STDERR).read_text()
    assert "command 'rogue' is not on its allow-list" in err and "sample" in err
    calc = next(iter(fake.calcs.values()))
    assert calc.status == "abnormal"
    assert "POST calc-start" not in fake.calls  # never started
    work = tmp_path / "p" / "work" / calc.accept_id / "work"
    assert not (work / "in.txt").exists()  # the inputs of a refused calc are not even stored


def test_bad_token_and_unknown_site(
    fake: FakeMintServer, programs: dict[str, Path], tmp_path: Path
) -> None:
    poller = start_poller(fake.url, SITE, "cd" * 32, tmp_path / "p", programs)
    assert poller.wait(20) == 254
    assert "invalid access token" in poller.text()
    res = run_wf(fake.url, SITE, "cd" * 32, "sample", "", "o", cwd=tmp_path / "wf")
    assert res.code == 1 and "invalid access token" in res.stderr
    res = run_wf(fake.url, "nowhere", TOKEN, "sample", "", "o", cwd=tmp_path / "wf")
    assert res.code == 1 and "not registered" in res.stderr
    res = run_wf(fake.url, SITE, TOKEN, "sample", "", "../evil", cwd=tmp_path / "wf")
    assert res.code == 2 and "bare name" in res.stderr
    assert not fake.calcs  # nothing registered by any of them


@pytest.mark.slow
def test_resume_after_poller_killed_mid_calc(
    fake: FakeMintServer, programs: dict[str, Path], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    env = {"MINT_TEST_DIR": str(shared)}
    wf = start_wf(fake.url, SITE, TOKEN, "sleep", "", "out.txt", tmp_path / "wf")
    poller = start_poller(fake.url, SITE, TOKEN, tmp_path / "p", programs, env=env)
    runs = shared / "runs.log"
    deadline = time.monotonic() + 30
    while not runs.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runs.exists(), poller.text()
    poller.kill()  # kill -9 while the program runs; the program outlives it
    (shared / "go").touch()
    poller2 = start_poller(fake.url, SITE, TOKEN, tmp_path / "p", programs, "--once", env=env)
    assert poller2.wait() == 0, poller2.text()
    assert "resuming" in poller2.text()
    res = finish_wf(wf)
    assert res.code == 0, res.stderr
    assert (tmp_path / "wf" / "out.txt").read_text() == "slept"
    assert len(runs.read_text().split()) == 1  # run once, not again after the restart
    assert poller_calls(fake).count("POST calc-start") == 1


@pytest.mark.slow
def test_large_file_round_trip_bounded_memory(
    fake: FakeMintServer, programs: dict[str, Path], tmp_path: Path
) -> None:
    size = 32 << 20
    wd = tmp_path / "wf"
    wd.mkdir()
    data = os.urandom(size)
    (wd / "big.bin").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    del data
    poller = start_poller(fake.url, SITE, TOKEN, tmp_path / "p", programs, "--once")
    res = run_wf(fake.url, SITE, TOKEN, "copy", "big.bin", "out.bin", cwd=wd)
    assert res.code == 0, res.stderr
    assert poller.wait() == 0
    out = wd / "out.bin"
    assert out.stat().st_size == size
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    # Each process starts at ~30 MiB; holding a body whole would add its base64 (43 MiB) and
    # the decoded bytes (32 MiB) at least. Measured: +5 MiB.
    for who, peak in (("poller", poller.peak_kib), ("wf", res.peak_kib)):
        assert 0 < peak < 48 * 1024, f"{who} peak RSS {peak / 1024:.0f} MiB"
