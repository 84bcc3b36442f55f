"""The fast layer (`make test-unit`): pure logic and local files only.

Every test here runs with sockets and child processes refused, so a test that needs a real part
(a server, sshd, a program) fails at once with a pointer to the integration layer instead of
slowing this layer down or testing less than its name says.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

WHERE = "unit tests use no sockets or subprocesses: put this test in the integration layer"


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise AssertionError(WHERE)


@pytest.fixture(autouse=True)
def _no_network_no_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("connect", "connect_ex", "bind", "listen"):
        monkeypatch.setattr(socket.socket, name, _refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse)
    monkeypatch.setattr("os.fork", _refuse)
    monkeypatch.setattr("os.posix_spawn", _refuse)
    yield
