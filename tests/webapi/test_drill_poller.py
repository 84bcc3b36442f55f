"""Fault drills for the poller: stopped in its long-poll, its state dir removed under it, its
disk full, a server that trickles or answers off-protocol. Each with the real fault."""

from __future__ import annotations

import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tmpfs import small_tmpfs
from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer
from tests.webapi.test_poller import start_poller, write_config
from webapi.client.client import Client

pytestmark = pytest.mark.drill
MIB = 1 << 20

# Notes its run in a log outside the work dir (so a second run shows), then fills its cwd until
# the disk is full, then exits 0: its end must still be recorded, and it must run only once.
FILLER = [
    sys.executable,
    "-c",
    (
        "import sys\n"
        "open(sys.argv[1], 'a').write('run\\n')\n"
        "try:\n"
        "    with open('fill.bin', 'wb') as fh:\n"
        "        while True:\n"
        "            fh.write(b'x' * (1 << 20)); fh.flush()\n"
        "except OSError:\n"
        "    pass\n"
        "open('out.txt', 'w').write('done\\n')\n"
    ),
]
COUNT = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('run\\n')"]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def client(api_server: RunningServer) -> Iterator[Client]:
    with Client(
        api_server.url, api_server.tokens["alice"], ca_file=api_server.ca_file, poll_interval=0.2
    ) as c:
        yield c


def test_a_poller_stopped_in_its_long_poll_is_handed_nothing(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = make_api_server(claim_wait_max=30, lease_seconds=600)
    config = write_config(server, tmp_path, claim_wait=25, commands={"sample": {"argv": COUNT}})
    log = tmp_path / "poller.log"
    poller = start_poller(config, log=log)
    # Its claim is open on the server (waiting up to 25 s) once it said it serves the site.
    wait_until(lambda: "serving site" in log.read_text(), "the poller to start")
    time.sleep(1.0)
    poller.send_signal(signal.SIGTERM)
    assert poller.wait(timeout=20) == 0
    with Client(server.url, server.tokens["alice"], ca_file=server.ca_file) as client:
        calc = client.submit("site-a", "sample", [str(tmp_path / "runs.log")], [])
        time.sleep(3)  # the departed poller's claim would have had it by now
        api = Api(server)
        shown = api.get(calc.id)
        assert shown["state"] == "queued" and shown["attempts"] == 0, shown
        # A poller that is there takes it at once, and it runs once.
        again = start_poller(config, "--once", log=log)
        assert again.wait(timeout=60) == 0
        assert client.wait(calc.id, timeout=30).state == "succeeded"
    assert (tmp_path / "runs.log").read_text() == "run\n"


def test_a_poller_whose_state_dir_is_removed_stops_cleanly(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """As `retire` with service_manager none does: the poller's files go, the process stays."""
    server = make_api_server(claim_wait_max=5, claim_confirm_seconds=2)
    config = write_config(server, tmp_path, claim_wait=3, commands={"sample": {"argv": COUNT}})
    log = tmp_path / "poller.log"
    poller = start_poller(config, log=log)
    wait_until(lambda: "serving site" in log.read_text(), "the poller to start")
    shutil.rmtree(tmp_path / "state")
    with Client(server.url, server.tokens["alice"], ca_file=server.ca_file) as client:
        calc = client.submit("site-a", "sample", [str(tmp_path / "runs.log")], [])
        assert poller.wait(timeout=30) == 2
        text = log.read_text()
        assert "state dir" in text and "is gone" in text and "Traceback" not in text
        # Whether it had taken the calc or not, the calc is free again within seconds.
        api = Api(server)
        wait_until(lambda: api.get(calc.id)["state"] == "queued", "the calc to be queued", 10)
        assert api.get(calc.id)["attempts"] == 0
    assert not (tmp_path / "runs.log").exists()


def test_a_full_disk_on_the_external_host_never_runs_a_program_twice(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "small", 16) as small:
        server = make_api_server()
        runs = tmp_path / "runs.log"
        config = write_config(
            server,
            tmp_path,
            work_base=str(small / "work"),
            state_dir=str(small / "state"),
            min_free_bytes=MIB,
            commands={"fail": {"argv": FILLER}, "sample": {"argv": COUNT}},
        )
        log = tmp_path / "poller.log"
        with Client(server.url, server.tokens["alice"], ca_file=server.ca_file) as client:
            calc = client.submit("site-a", "fail", [str(runs)], [])
            poller = start_poller(config, log=log)
            try:
                final = client.wait(calc.id, timeout=60)
                assert final.state == "failed", final
                assert "no space left on the external host" in (final.reason or "")
                assert runs.read_text() == "run\n"  # once, however its end was recorded
                # The poller keeps serving: once the disk has room again, work goes on.
                for filled in small.glob("work/*/work/fill.bin"):
                    filled.unlink()
                second = client.submit("site-a", "sample", [str(runs)], [])
                assert client.wait(second.id, timeout=60).state == "succeeded"
                assert poller.poll() is None
            finally:
                poller.send_signal(signal.SIGTERM)
                poller.wait(timeout=20)
        assert runs.read_text() == "run\nrun\n"
        assert "Traceback" not in log.read_text()


class TricklingServer:
    """Accepts HTTP requests and answers them one byte every `every` seconds."""

    def __init__(self, answer: bytes, every: float = 0.5) -> None:
        self.answer, self.every = answer, every
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                for i in range(len(self.answer)):
                    if self._stop.wait(self.every):
                        return
                    conn.sendall(self.answer[i : i + 1])
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.mark.parametrize("protocol", ["native", "mint"])
def test_a_trickling_server_cannot_hold_the_poller(tmp_path: Path, protocol: str) -> None:
    body = b'{"errors": [{"code": "0300", "message": "nothing"}]}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = TricklingServer(answer * 20, every=0.5)
    try:
        token = tmp_path / "token"
        token.write_text("t" * 64)
        token.chmod(0o600)
        args: list[str] = []
        if protocol == "mint":
            args = [
                "--protocol",
                "mint",
                "site-a",
                server.url,
                "-",
                "--token-file",
                str(token),
                "retry:2,0.5",
            ]
        started = time.monotonic()
        log = tmp_path / "poller.log"
        cfg: dict[str, Any] = {"request_deadline": 3, "retry": {"count": 2, "interval": 0.5}}
        fake = RunningServerLike(server.url, token)
        config = write_config(fake, tmp_path, **cfg)  # type: ignore[arg-type]
        proc = start_poller(config, *args, log=log)
        assert proc.wait(timeout=120) == 255
        elapsed = time.monotonic() - started
        text = log.read_text()
        assert "too slowly" in text and "giving up" in text and "Traceback" not in text
        assert elapsed < 60, elapsed  # bounded by the deadlines, not by the trickle
    finally:
        server.close()


class RunningServerLike:
    """Just what write_config reads from a RunningServer, for a server of the test's own."""

    def __init__(self, url: str, token: Path) -> None:
        self.url = url
        self.tokens = {"alice": token.read_text()}
        self.ca_file = token  # unused over http


def test_an_unusable_offer_does_not_stop_the_mint_poller(tmp_path: Path) -> None:
    """A server offering `../../etc` as an accept_id: skipped, logged once, the poller serves
    on (it is a supervisor's crash loop otherwise)."""
    body = b'{"errors": [{"code": 200, "message": "x", "accept_id": "../../etc"}]}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = TricklingServer(answer, every=0)
    try:
        token = tmp_path / "token"
        token.write_text("t" * 64)
        token.chmod(0o600)
        log = tmp_path / "poller.log"
        config = write_config(RunningServerLike(server.url, token), tmp_path)  # type: ignore[arg-type]
        proc = start_poller(
            config,
            "--protocol",
            "mint",
            "site-a",
            server.url,
            "-",
            "--token-file",
            str(token),
            "--poll-interval",
            "0.1",
            log=log,
        )
        wait_until(lambda: "unusable accept_id" in log.read_text(), "the offer to be refused")
        time.sleep(1)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert log.read_text().count("unusable accept_id") == 1
    finally:
        server.close()
