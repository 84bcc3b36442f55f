"""Cut connections whose request overran its deadline, so slow or lying clients cannot hold the
server's worker threads: one thread for the whole server, used for request headers (cheroot
reads them in a worker) and for request bodies (Content-Length scaled)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

log = logging.getLogger(__name__)
TICK_S = 0.5


class Watchdog:
    def __init__(self, header_seconds: float = 30.0) -> None:
        self.header_seconds = header_seconds
        self._lock = threading.Lock()
        self._due: dict[int, tuple[float, socket.socket, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="extcomp-watchdog", daemon=True)
        self._thread.start()

    def arm(self, sock: socket.socket, seconds: float, what: str) -> None:
        """Cut `sock` unless `disarm` comes within `seconds`."""
        with self._lock:
            self._due[id(sock)] = (time.monotonic() + seconds, sock, what)

    def disarm(self, sock: Any) -> None:
        with self._lock:
            self._due.pop(id(sock), None)

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            now = time.monotonic()
            with self._lock:
                late = [(k, v) for k, v in self._due.items() if v[0] <= now]
                for key, _ in late:
                    del self._due[key]
            for _key, (_due, sock, what) in late:
                log.warning("cut a connection: %s took too long", what)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()
