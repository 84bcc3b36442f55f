"""The poller as a real process: no server deps, kill -9 and resume, give-up when unreachable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.webapi.conftest import RunningServer
from tests.webapi.test_e2e import PollerThread, poller_config, wait_for
from webapi.client.client import Client
from webapi.poller.native import NativeAdapter
from webapi.poller.state import Phase, StateDir

# Run the poller with the server's dependencies made unimportable, as on an external host.
BLOCKED = ("bottle", "cheroot", "ansible", "ansible_runner", "cryptography")
LAUNCHER = (
    "import sys\n"
    f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
    "from webapi.poller.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "leaked = sorted(m for m in sys.modules if m.split('.')[0] in "
    "('bottle', 'cheroot', 'ansible', 'ansible_runner') and sys.modules[m] is not None)\n"
    "leaked += sorted(m for m in sys.modules if m.startswith(('webapi.server', 'webapi.store', "
    "'webapi.mint.server')))\n"
    "assert not leaked, leaked\n"
    "sys.exit(code)\n"
)
# Counts its runs in a file outside the work dir, then takes a while.
COUNTING = [
    sys.executable,
    "-c",
    "import sys, time; open(sys.argv[1], 'a').write('run\\n'); "
    "time.sleep(float(sys.argv[2])); open('out.txt', 'w').write('done\\n')",
]


def start_poller(config_file: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, "--config", str(config_file), *args],
            stdout=fh,
            stderr=fh,
            stdin=subprocess.DEVNULL,
        )


def write_config(server: RunningServer, tmp: Path, **over: Any) -> Path:
    token = tmp / "token"
    token.write_text(server.tokens["alice"])
    token.chmod(0o600)
    data = {
        "site": "site-a",
        "url": server.url,
        "token_file": str(token),
        "ca_file": str(server.ca_file),
        "work_base": str(tmp / "work"),
        "state_dir": str(tmp / "state"),
        "claim_wait": 2,
        "http_retries": 1,
        "retry": {"count": 3, "interval": 0.2},
        "commands": {"sample": {"argv": COUNTING}},
        **over,
    }
    path = tmp / "poller.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def client(api_server: RunningServer) -> Iterator[Client]:
    with Client(
        api_server.url, api_server.tokens["alice"], ca_file=api_server.ca_file, poll_interval=0.2
    ) as c:
        yield c


@pytest.mark.slow
@pytest.mark.parametrize("pause", [0.2, 4.0], ids=["within-lease", "after-lease-expired"])
def test_kill9_mid_run_then_restart_runs_once(
    api_server: RunningServer, client: Client, tmp_path: Path, pause: float
) -> None:
    """The program survives the killed poller; the restarted poller re-attaches (lease still
    valid) or re-claims the requeued calc (lease expired, 3 s in the fixture) and delivers the
    outcome without running the program again. Both pollers run with bottle/cheroot blocked."""
    counter = tmp_path / "runs.txt"
    config = write_config(api_server, tmp_path)
    log = tmp_path / "poller.log"
    first = start_poller(config, log=log)
    calc = client.submit("site-a", "sample", [str(counter), "2.5"], [])
    wait_for(lambda: counter.exists())
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    time.sleep(pause)
    second = start_poller(config, "--once", log=log)
    assert second.wait(timeout=40) == 0, log.read_text()
    final = client.wait(calc.id, timeout=20)
    assert final.state == "succeeded", (final, log.read_text())
    assert counter.read_text() == "run\n"
    assert [r.name for r in final.results] == [
        "extcomp-stderr.log",
        "extcomp-stdout.log",
        "out.txt",
    ]


def test_crash_after_outcome_recorded_resends_not_reruns(
    api_server: RunningServer, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = tmp_path / "runs.txt"
    config = poller_config(api_server, tmp_path, commands={"sample": {"argv": COUNTING}})

    class Crash(BaseException):
        pass

    def crash(self: NativeAdapter, record: Any, wd: Any) -> Any:
        raise Crash  # as if the host died right after writing the outbox

    with monkeypatch.context() as m:
        m.setattr(NativeAdapter, "report", crash)
        m.setattr(threading, "excepthook", lambda args: None)
        calc = client.submit("site-a", "sample", [str(counter), "0"], [])
        PollerThread(config).start().thread.join(20)
    record = StateDir(config.state_dir).load(calc.id)
    assert record is not None and record.phase is Phase.EXITED and record.exit_code == 0
    assert PollerThread(config).start().join() == 0
    assert client.wait(calc.id, timeout=20).state == "succeeded"
    assert counter.read_text() == "run\n"


def test_gives_up_when_server_unreachable(tmp_path: Path) -> None:
    """Positional form, bottle blocked: 3 attempts 0.2 s apart, then exit 255 with a clear line."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: connection refused
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            LAUNCHER.replace('"--config", ', ""),
            "site-a",
            f"http://127.0.0.1:{port}",
            "tok-secret-123",
            "retry:3,0.2",
            "--state-dir",
            str(tmp_path / "state"),
            "--allow",
            "sample=/bin/true",
            "--http-retries",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_PROXY": "*"},
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 255, proc.stderr
    assert "giving up" in proc.stderr and "3 attempts 0.2 s apart" in proc.stderr
    assert "attempt 1 of 3" in proc.stderr and "attempt 2 of 3" in proc.stderr
    assert "shows in `ps`" in proc.stderr
    assert "tok-secret-123" not in proc.stderr
    assert elapsed < 30


@pytest.mark.slow
def test_delivers_within_seconds_once_the_server_is_back(
    make_api_server: Any, tmp_path: Path
) -> None:
    """The server dies (-9) while the program runs; the poller's retry interval is 60 s, yet the
    result arrives seconds after the server is back (capped backoff: 1 s, 2 s, 4 s …)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_api_server(subprocess=True, port=port)
    counter = tmp_path / "runs.txt"
    config = write_config(server, tmp_path, retry={"count": 3, "interval": 60})
    log = tmp_path / "poller.log"
    poller = start_poller(config, log=log)
    try:
        with Client(server.url, server.tokens["alice"], ca_file=server.ca_file) as c:
            calc = c.submit("site-a", "sample", [str(counter), "1"], [])
        wait_for(lambda: counter.exists())
        server.kill()
        wait_for(lambda: "trying again within" in log.read_text(), 30)
        again = make_api_server(subprocess=True, base_dir=server.base_dir, port=port)
        back = time.monotonic()
        with Client(again.url, again.tokens["alice"], ca_file=again.ca_file) as c:
            # Far less than the 60 s interval: a poller waiting out its interval fails this.
            final = c.wait(calc.id, timeout=20)
        assert final.state == "succeeded", log.read_text()
        assert time.monotonic() - back < 20
        assert counter.read_text() == "run\n"
    finally:
        poller.send_signal(signal.SIGTERM)
        poller.wait(timeout=20)
