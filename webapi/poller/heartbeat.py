"""A thread that keeps a calc's lease alive and notices a cancel or a lost lease."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from webapi.contract.calc import Heartbeat as HeartbeatBody
from webapi.errors import ApiError, Conflict, Forbidden, MalformedAnswer, NotFound, TransportError
from webapi.poller.api import PollerApi

log = logging.getLogger(__name__)


class Heartbeat:
    """POSTs `/calcs/{id}/heartbeat` every `interval` seconds until stopped.

    It uses its own PollerApi (sessions are not shared across threads). A server that cannot be
    reached is only logged: the program keeps running, and the lease check is repeated.
    """

    def __init__(
        self,
        api: PollerApi,
        calc_id: str,
        lease_id: str,
        interval: float,
        progress: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.api = api
        self.calc_id = calc_id
        self.lease_id = lease_id
        self.interval = max(0.2, interval)
        self.progress = progress
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.reason = ""
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and nudge(): beat (or end) now
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{calc_id}", daemon=True)

    def beat(self) -> None:
        """One heartbeat; sets `cancelled` or `lost`. Raises TransportError if unreachable."""
        try:
            answer = self.api.heartbeat(self.calc_id, HeartbeatBody(self.lease_id, self.progress()))
        except (Conflict, NotFound, Forbidden) as exc:
            self.reason = f"lease lost: {exc.message}"
            self.lost.set()
            return
        if answer.cancel:
            self.reason = "cancelled by the user"
            self.cancelled.set()

    def check(self) -> None:
        """One heartbeat now (is the lease still ours?)."""
        self.beat()

    def nudge(self) -> None:
        """Beat now rather than at the next interval (e.g. a batch job id to report)."""
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.beat()
            except TransportError as exc:
                log.warning("heartbeat for %s failed: %s", self.calc_id, exc)
            except ApiError as exc:
                log.warning("heartbeat for %s refused: %s", self.calc_id, exc.message)
            except MalformedAnswer as exc:
                log.warning("heartbeat for %s: %s", self.calc_id, exc)
            if self.cancelled.is_set() or self.lost.is_set():
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.api.transport.settings.connect_timeout + 5)
        self.api.close()

    @property
    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set()
