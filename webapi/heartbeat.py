"""A thread that keeps a calc's lease alive and notices a cancel or a lost lease."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from webapi.errors import ApiError, Conflict, Forbidden, NotFound, TransportError
from webapi.transport import Transport

log = logging.getLogger(__name__)


class Heartbeat:
    """POSTs `/calcs/{id}/heartbeat` every `interval` seconds until stopped.

    It uses its own Transport (sessions are not shared across threads). A server that cannot be
    reached is only logged: the program keeps running, and the lease check is repeated.
    """

    def __init__(
        self,
        transport: Transport,
        calc_id: str,
        lease_id: str,
        interval: float,
        progress: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.transport = transport
        self.calc_id = calc_id
        self.lease_id = lease_id
        self.interval = max(0.2, interval)
        self.progress = progress
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{calc_id}", daemon=True)

    def beat(self) -> None:
        """One heartbeat; sets `cancelled` or `lost`. Raises TransportError if unreachable."""
        body: dict[str, object] = {"lease": self.lease_id}
        progress = self.progress()
        if progress:
            body["progress"] = progress
        try:
            _, answer = self.transport.call(
                "POST", f"/api/v1/calcs/{self.calc_id}/heartbeat", json=body
            )
        except (Conflict, NotFound, Forbidden) as exc:
            self.reason = f"lease lost: {exc.message}"
            self.lost.set()
            return
        if isinstance(answer, dict) and answer.get("cancel"):
            self.reason = "cancelled by the user"
            self.cancelled.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except TransportError as exc:
                log.warning("heartbeat for %s failed: %s", self.calc_id, exc)
            except ApiError as exc:
                log.warning("heartbeat for %s refused: %s", self.calc_id, exc.message)
            if self.cancelled.is_set() or self.lost.is_set():
                return

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.transport.settings.connect_timeout + 5)
        self.transport.close()

    @property
    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set()
