"""The mint-mode poller's loop: take calcs through the original protocol, one at a time.

Works against the original server and ours alike: it polls `calc-request` every `poll_interval`
seconds and hands each waiting calc to `webapi.mint_steps` (fetch, run, report); calcs recorded
in the state dir but not finished are resumed first, after a restart too. Server trouble is
retried per the config's retry policy; a refused token ends the loop.
"""

from __future__ import annotations

import logging
import socket
import threading

from webapi.errors import TransportError
from webapi.mint_steps import CalcSteps, MintRecord, MintState
from webapi.mintproto import MintApi, MintError, MintSettings
from webapi.pollconfig import PollerConfig

log = logging.getLogger(__name__)

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 254, 255


class MintPoller:
    """Serves one site of an original-protocol server; `run()` until stopped or given up."""

    def __init__(self, config: PollerConfig, token: str, *, poll_interval: float = 10.0) -> None:
        self.config = config
        self.poller_id = config.poller_id or socket.gethostname()
        self.poll_interval = poll_interval
        self.state = MintState(config.state_dir / "mint")
        self.stop_event = threading.Event()
        self.busy = False  # a calc is being handled: a signal then stops after its current step
        self.api = MintApi(MintSettings(
            url=config.url, token=token, ca_file=config.ca_file, verify=config.verify,
            retries=config.http_retries,
        ))  # fmt: skip
        self.steps = CalcSteps(config, self.api, self.state, poller_id=self.poller_id,
                               stop_event=self.stop_event)  # fmt: skip
        self._last_idle = ""

    def stop(self) -> None:
        self.stop_event.set()

    def run(self, *, once: bool = False) -> int:
        """0 when stopped (or after one calc with `once`), 254 token refused, 255 unreachable."""
        try:
            return self._loop(once)
        finally:
            self.api.close()

    def _loop(self, once: bool) -> int:
        failures = 0
        while not self.stop_event.is_set():
            try:
                handled = False
                for rec in self.state.pending():
                    log.info("resuming %s from phase %s", rec.accept_id, rec.phase)
                    self.process(rec)
                    handled = True
                if not handled:
                    accept_id = self.request()
                    failures = 0
                    if accept_id is not None:
                        self.process(self.state.save(MintRecord(accept_id, self.config.site)))
                        handled = True
                if once and handled:
                    return EXIT_OK
                if not handled:
                    self.stop_event.wait(self.poll_interval)
            except (TransportError, MintError) as exc:
                if isinstance(exc, MintError) and (exc.refused or exc.error == "unknown_site"):
                    log.error("the server refused this poller (site %s): %s",
                              self.config.site, exc.message)  # fmt: skip
                    return EXIT_REFUSED
                failures += 1
                retry = self.config.retry
                if failures >= retry.count:
                    log.error(
                        "giving up: %s unreachable for %d attempts %g s apart (last error: %s); "
                        "work in progress is kept in %s", self.config.url, failures,
                        retry.interval, exc, self.state.root,
                    )  # fmt: skip
                    return EXIT_UNREACHABLE
                log.warning("server trouble (%s); attempt %d of %d, next in %g s",
                            exc, failures, retry.count, retry.interval)  # fmt: skip
                self.stop_event.wait(retry.interval)
        return EXIT_OK

    def request(self) -> str | None:
        """calc-request: the accept_id of a waiting calc, or None (any non-200 code, HTTP 200)."""
        try:
            head = self.api.call("GET", "calc-request", params={"site_id": self.config.site})
        except MintError as exc:
            if exc.status >= 400 or exc.code is None:
                raise
            if exc.message != self._last_idle:  # say it once, not every poll
                log.info("nothing to do (%s)", exc.message)
                self._last_idle = exc.message
            return None
        accept_id = head.get("accept_id")
        if not isinstance(accept_id, str) or not accept_id:
            raise MintError("calc-request: the answer has code 200 but no accept_id")
        log.info("calc %s is waiting for site %s", accept_id, self.config.site)
        return accept_id

    # -- one calc -----------------------------------------------------------------------------
    def process(self, rec: MintRecord) -> None:
        """Drive one calc as far as it goes now; transport trouble propagates (state is kept)."""
        self.busy = True
        try:
            self.steps.process(rec)
        finally:
            self.busy = False
