"""End to end over real HTTPS: client → real API server → real poller → real program → results."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.webapi.conftest import RunningServer
from webapi.cli import main as client_main
from webapi.client.client import Client
from webapi.poller.cli import make_poller
from webapi.poller.config import PollerConfig, RunSpec, parse_config
from webapi.poller.state import StateDir

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = [sys.executable, str(ROOT / "demo" / "sample_program.py")]
FAIL = [
    sys.executable,
    "-c",
    "import sys; print('about to fail'); sys.stderr.write('boom: bad input\\n'); sys.exit(3)",
]
SLEEP = [
    sys.executable,
    "-c",
    "import os, sys, time; print(os.getpid(), flush=True); time.sleep(float(sys.argv[1]))",
]


def poller_config(server: RunningServer, tmp: Path, **over: Any) -> PollerConfig:
    data: dict[str, Any] = {
        "site": "site-a",
        "url": server.url,
        "token": server.tokens["alice"],
        "ca_file": str(server.ca_file),
        "work_base": str(tmp / "work"),
        "state_dir": str(tmp / "state"),
        "claim_wait": 2,
        "http_retries": 1,
        "retry": {"count": 3, "interval": 0.2},
        "commands": {"sample": {"argv": SAMPLE}, "fail": {"argv": FAIL}},
    }
    data.update(over)
    return parse_config(data)


class PollerThread:
    """A real Poller serving in a thread (`once` handles one calc)."""

    def __init__(self, config: PollerConfig, *, once: bool = True) -> None:
        self.poller = make_poller(RunSpec(config), config.token or "")
        self.poller.supervise_interval = 0.1
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(once,), daemon=True)

    def _run(self, once: bool) -> None:
        self.code = self.poller.run(once=once)

    def start(self) -> PollerThread:
        self.thread.start()
        return self

    def join(self, timeout: float = 30) -> int | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "poller did not finish"
        return self.code


@pytest.fixture
def client(api_server: RunningServer) -> Iterator[Client]:
    with Client(
        api_server.url, api_server.tokens["alice"], ca_file=api_server.ca_file, poll_interval=0.2
    ) as c:
        yield c


def wait_for(pred: Callable[[], bool], limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_round_trip_python_api(api_server: RunningServer, client: Client, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "a.txt").write_text("one two\nthree\n")
    (inputs / "sub" / "b.txt").write_text("four\n")
    single = tmp_path / "single.txt"
    single.write_text("x y z\n")
    poller = PollerThread(poller_config(api_server, tmp_path)).start()
    seen: list[str] = []
    result = client.run(
        "site-a",
        "sample",
        [],
        [inputs, single],
        results_dir=tmp_path / "out",
        on_status=lambda c: seen.append(c.state),
    )
    assert poller.join() == 0
    assert result.ok and result.exit_code == 0
    assert seen[-1] == "succeeded"
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "in/a.txt" in summary and "in/sub/b.txt" in summary and "single.txt" in summary
    assert summary.splitlines()[-1].split()[:2] == ["4", "7"]
    assert (tmp_path / "out" / "extcomp-stdout.log").read_text() == "summarised 3 files\n"
    # Inputs that the program left unchanged are not sent back.
    assert not (tmp_path / "out" / "single.txt").exists()


def test_cli_failure_shows_reason_and_stderr_tail(
    api_server: RunningServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(api_server.tokens["alice"])
    monkeypatch.setenv("EXTCOMP_API_URL", api_server.url)
    monkeypatch.setenv("EXTCOMP_API_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("EXTCOMP_API_CA", str(api_server.ca_file))
    poller = PollerThread(poller_config(api_server, tmp_path)).start()
    code = client_main(
        ["submit", "--site", "site-a", "--command", "fail", "--results", str(tmp_path / "res")]
    )
    assert poller.join() == 0
    err = capsys.readouterr().err
    assert code == 3
    assert "failed: the program exited with code 3" in err
    assert "boom: bad input" in err
    assert (tmp_path / "res" / "extcomp-stdout.log").exists()
    assert not (tmp_path / "res.partial").exists()


def test_a_command_off_the_pollers_allow_list_is_never_handed_to_it(
    api_server: RunningServer, client: Client, tmp_path: Path
) -> None:
    # The server allows `sleep` on site-a; this poller does not, and its claim names what it runs:
    # the calc stays queued and says why, instead of being claimed and refused.
    calc = client.submit("site-a", "sleep", ["1"], [])
    poller = PollerThread(poller_config(api_server, tmp_path)).start()
    assert poller.join() == 0  # one claim (2 s), nothing handed over
    shown = client.show(calc.id)
    assert shown.state == "queued"
    assert shown.reason is not None and "command sleep is not on the list" in shown.reason
    assert not (tmp_path / "work" / calc.id).exists()


def test_cancel_reaches_running_program(
    api_server: RunningServer, client: Client, tmp_path: Path
) -> None:
    config = poller_config(api_server, tmp_path, commands={"sleep": {"argv": SLEEP}})
    poller = PollerThread(config).start()
    calc = client.submit("site-a", "sleep", ["60"], [])
    wait_for(lambda: client.show(calc.id).state == "running")
    stdout = tmp_path / "work" / calc.id / "work" / "extcomp-stdout.log"
    wait_for(lambda: stdout.exists() and stdout.read_text().strip() != "")
    pid = int(stdout.read_text().split()[0])
    started = time.monotonic()
    assert client.cancel(calc.id).state == "cancelled"
    assert poller.join() == 0
    assert time.monotonic() - started < 10  # heartbeat every 1 s in the fixture
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    record = StateDir(config.state_dir).load(calc.id)
    assert record is not None and record.phase == "dropped"


def test_large_file_round_trip(api_server: RunningServer, client: Client, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with big.open("wb") as fh:
        for i in range(64):
            block = hashlib.sha256(str(i).encode()).digest() * (1 << 15)  # 1 MiB
            fh.write(block)
            digest.update(block)
    copy = [sys.executable, "-c", "import shutil; shutil.copy('big.bin', 'copy.bin')"]
    poller = PollerThread(poller_config(api_server, tmp_path, commands={"sample": {"argv": copy}}))
    tracemalloc.start()
    poller.start()
    result = client.run("site-a", "sample", [], [big], results_dir=tmp_path / "out")
    assert poller.join() == 0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.ok
    # Client, server and poller all run in this process: each streams, none holds the file.
    assert peak < 24 << 20, f"peak Python memory {peak >> 20} MiB"
    out = tmp_path / "out" / "copy.bin"
    assert out.stat().st_size == 64 << 20
    with out.open("rb") as fh:
        assert hashlib.file_digest(fh, "sha256").hexdigest() == digest.hexdigest()


def test_time_limit_stops_program_and_cli_exits_124(
    api_server: RunningServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXTCOMP_API_TOKEN", api_server.tokens["alice"])
    monkeypatch.delenv("EXTCOMP_API_TOKEN_FILE", raising=False)
    config = poller_config(api_server, tmp_path, commands={"sleep": {"argv": SLEEP, "timeout": 30}})
    poller = PollerThread(config).start()
    code = client_main(
        [
            "submit",
            "--url",
            api_server.url,
            "--ca-file",
            str(api_server.ca_file),
            "--site",
            "site-a",
            "--command",
            "sleep",
            "--timeout",
            "1",
            "--results",
            str(tmp_path / "r"),
            "--",
            "60",
        ]
    )
    assert poller.join() == 0
    err = capsys.readouterr().err
    assert code == 124, err
    assert "timed out after 1 s; the program was stopped" in err
