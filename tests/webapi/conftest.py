"""Fixtures that run the real API server (cheroot, TLS, real sockets) for WebAPI tests."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.tls import make_tls
from webapi.server.auth import UserStore

PASSWORDS = {"alice": "alice-pw-Zq8r3Xk", "bob": "bob-pw-Wm2Lp9", "admin": "admin-pw-Tt7Hd4"}
DEFAULT_CONFIG: dict[str, Any] = {
    "listen": "127.0.0.1",
    "port": 0,
    "threads": 48,
    "lease_seconds": 3,
    "heartbeat_seconds": 1,
    "max_attempts": 3,
    "claim_wait_max": 5,
    "queued_expiry_seconds": 3600,
    "quota_bytes": 0,
    "reaper_seconds": 0.5,
    "sites": {
        "site-a": {"commands": ["sample", "fail", "sleep"]},
        "site-b": {"commands": ["sample"]},
    },
}


@dataclass(frozen=True)
class RunningServer:
    url: str  # "https://127.0.0.1:<port>"
    ca_file: Path  # the self-signed certificate to verify against
    config_path: Path  # the server's YAML config; rewrite it to test live reloads
    data_dir: Path
    users_file: Path
    tokens: dict[str, str]  # plain tokens of "alice", "bob" and "admin" (admin user)
    log_path: Path  # the server's log file (grep it for secrets)
    passwords: dict[str, str] = field(default_factory=lambda: dict(PASSWORDS))
    base_dir: Path = Path()  # pass as make_api_server(base_dir=...) to restart on the same data
    process: subprocess.Popen[bytes] | None = None  # set for subprocess=True servers
    metrics_url: str | None = None  # the separate metrics listener's (metrics_listen), if any
    _stop: Callable[[], None] = lambda: None

    def stop(self) -> None:
        self._stop()

    def kill(self) -> None:
        """kill -9 a subprocess server (crash test)."""
        assert self.process is not None, "kill() needs make_api_server(subprocess=True)"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_tls(tmp_path_factory.mktemp("tls"))


def _prepare(
    base: Path, tls: tuple[Path, Path], overrides: dict[str, Any]
) -> tuple[Path, dict[str, str]]:
    """Write config + users (or reuse those of an earlier server in `base`)."""
    base.mkdir(parents=True, exist_ok=True)
    config_path, tokens_path = base / "config.yml", base / "tokens.json"
    config = {
        **DEFAULT_CONFIG,
        "data_dir": str(base / "data"),
        "users_file": str(base / "users.yml"),
        "log_file": str(base / "server.log"),
        "tls": {"cert": str(tls[0]), "key": str(tls[1])},
        **overrides,
    }
    config_path.write_text(yaml.safe_dump(config))
    if tokens_path.exists():
        return config_path, json.loads(tokens_path.read_text())
    users = UserStore(base / "users.yml")
    tokens = {
        name: users.add_user(name, admin=name == "admin", password=PASSWORDS[name]).token
        for name in ("alice", "bob", "admin")
    }
    tokens_path.write_text(json.dumps(tokens))
    return config_path, tokens


@pytest.fixture
def make_api_server(
    tmp_path_factory: pytest.TempPathFactory, tls_material: tuple[Path, Path]
) -> Iterator[Callable[..., RunningServer]]:
    """Factory: make_api_server(subprocess=False, base_dir=None, **config_overrides)."""
    stops: list[Callable[[], None]] = []

    def make(
        *, subprocess: bool = False, base_dir: Path | None = None, **overrides: Any
    ) -> RunningServer:
        base = base_dir or tmp_path_factory.mktemp("api")
        config_path, tokens = _prepare(base, tls_material, overrides)
        log_path = base / "server.log"
        common = dict(
            ca_file=tls_material[0],
            config_path=config_path,
            data_dir=base / "data",
            users_file=base / "users.yml",
            tokens=tokens,
            log_path=log_path,
            base_dir=base,
        )
        if subprocess:
            return _start_subprocess(config_path, log_path, common, stops)
        return _start_thread(config_path, log_path, common, stops)

    yield make
    for stop in reversed(stops):
        stop()


def _start_thread(
    config_path: Path, log_path: Path, common: dict[str, Any], stops: list[Callable[[], None]]
) -> RunningServer:
    from webapi.server.serve import ApiServer

    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("webapi")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    server = ApiServer(config_path)
    server.start()
    done = False

    def stop() -> None:
        nonlocal done
        if done:
            return
        done = True
        server.stop()
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()

    stops.append(stop)
    return RunningServer(url=server.url, _stop=stop, metrics_url=server.metrics_url, **common)


def _start_subprocess(
    config_path: Path, log_path: Path, common: dict[str, Any], stops: list[Callable[[], None]]
) -> RunningServer:
    offset = log_path.stat().st_size if log_path.exists() else 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "webapi.cli", "serve", "--config", str(config_path), "--verbose"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        url = _wait_for_log_after(log_path, proc, offset)
    except Exception:
        proc.kill()
        proc.wait()
        raise

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    stops.append(stop)
    return RunningServer(url=url, _stop=stop, process=proc, **common)


def _wait_for_log_after(log_path: Path, proc: subprocess.Popen[bytes], offset: int) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log_path.exists():
            with log_path.open("rb") as fh:
                fh.seek(offset)
                for line in fh.read().decode("utf-8", "replace").splitlines():
                    if "api server listening on " in line:
                        return line.split("listening on ", 1)[1].split()[0]
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {err}")
        time.sleep(0.05)
    raise RuntimeError("server did not start in time")


@pytest.fixture
def api_server(make_api_server: Callable[..., RunningServer]) -> RunningServer:
    """A running server with the default config (threaded, TLS on 127.0.0.1)."""
    return make_api_server()
