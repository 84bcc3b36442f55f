"""The storage seam the web layer calls (`JobStore`) and the value types that cross it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from webapi.calcs import Calc
from webapi.contract.calc import CalcState, FileEntry
from webapi.store.pollers import PollerSighting

Kind = Literal["inputs", "results"]
Accept = Callable[[Calc], bool]  # which queued calcs a poller can run


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """The timing rules that apply to one site's calcs (from the server config)."""

    lease_seconds: int = 600
    max_attempts: int = 3
    queued_expiry_seconds: int = 86400
    registered_expiry_seconds: int = 86400


def _always() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class ClaimTerms:
    """How a claim is made: which calcs fit the poller, how long its lease is, whether it must
    confirm it got the calc (within `confirm_seconds`, else the calc goes back to the queue),
    and how to tell that the poller is still there to receive it."""

    accept: Accept | None = None
    lease_seconds: float | None = None  # None: the site's
    confirm_seconds: float | None = None  # None: the lease counts from the claim
    still_there: Callable[[], bool] = _always
    agent: str | None = None  # the poller's User-Agent (its version), shown on the status page
    # The command names the poller runs (None: it did not say; any calc fits). Recorded in its
    # sighting so a queued calc can say no live poller runs its command.
    commands: tuple[str, ...] | None = None

    def fits(self, calc: Calc) -> bool:
        """Whether the poller may be handed `calc`: on its command list, and `accept`ed."""
        if self.commands is not None and calc.command not in self.commands:
            return False
        return self.accept is None or self.accept(calc)


@dataclass(frozen=True, slots=True)
class NewCalcRequest:
    user: str
    site: str
    command: str
    args: tuple[str, ...]
    inputs: tuple[FileEntry, ...]
    timeout: int | None = None
    request_id: str | None = None
    held: bool = False  # stays registered until release() (see calcs.release)
    meta: dict[str, Any] | None = None


class StoreEvents(Protocol):
    """What a store tells its listeners (the server's metrics) as it happens."""

    def claim_answered(self, site: str, seconds: float, claimed: Calc | None) -> None:
        """A claim call ended after `seconds` (long-poll included), with a calc or empty."""

    def lease_expired(self, site: str, requeued: bool) -> None:
        """A lease ran out: the calc went back to the queue, or failed (attempts used up)."""

    def requeued(self, site: str, cause: str) -> None:
        """A calc went back to the queue for `cause`: "admin" or "unclaim" (lease expiries are
        told by lease_expired)."""


@dataclass(frozen=True, slots=True)
class StoreCensus:
    """What a metrics scrape (and the status page) reads from the store: calcs by (site, state)
    and by (site, state, user), and, per site, when its longest-waiting queued calc was queued."""

    calcs: dict[tuple[str, str], int]
    oldest_queued: dict[str, float]
    by_user: dict[tuple[str, str, str], int] = field(default_factory=dict)


class JobStore(Protocol):
    """What the web layer needs from storage; it never touches files itself."""

    def create(self, req: NewCalcRequest, *, quota_bytes: int) -> tuple[Calc, bool]: ...
    def get(self, calc_id: str) -> Calc: ...
    def list_calcs(
        self, *, user: str | None, state: CalcState | None, site: str | None
    ) -> list[Calc]: ...
    def cancel(self, calc_id: str, reason: str) -> Calc: ...
    def requeue(self, calc_id: str) -> Calc: ...
    def write_file(
        self,
        calc_id: str,
        kind: Kind,
        name: str,
        offset: int,
        body: BinaryIO,
        length: int | None,
        lease_id: str | None,
    ) -> tuple[Calc, FileEntry]: ...
    def adopt_file(
        self,
        calc_id: str,
        kind: Kind,
        name: str,
        source: Path,
        sha256: str,
        lease_id: str | None,
    ) -> tuple[Calc, FileEntry]: ...
    def open_file(self, calc_id: str, kind: Kind, name: str) -> tuple[BinaryIO, int]: ...
    def release(self, calc_id: str) -> Calc: ...
    def fail(self, calc_id: str, reason: str) -> Calc: ...
    def peek(self, *, site: str, user: str, poller: str, accept: Accept) -> Calc | None: ...
    def claim(
        self, *, site: str, user: str, poller: str, wait: float, terms: ClaimTerms | None = None
    ) -> Calc | None: ...
    def unclaim(self, calc_id: str, lease_id: str, reason: str) -> Calc: ...
    def heartbeat(
        self,
        calc_id: str,
        lease_id: str,
        progress: str | None,
        lease_seconds: float | None = None,
    ) -> Calc: ...
    def finish(
        self,
        calc_id: str,
        *,
        lease_id: str,
        exit_code: int,
        reason: str | None,
        results: tuple[FileEntry, ...],
        quota_bytes: int,
        missing: dict[str, str] | None = None,
    ) -> Calc: ...
    def reap(self) -> int: ...
    def poller_seen(self, site: str) -> tuple[str, float] | None: ...
    def poller_users(self, site: str) -> dict[str, float]: ...
    def poller_sightings(self, site: str) -> list[PollerSighting]: ...
    def subscribe(self, events: StoreEvents) -> None: ...
    def census(self) -> StoreCensus: ...
    def close(self) -> None: ...
