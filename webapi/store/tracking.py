"""In-memory indexes the store derives from its calc records, so that no periodic job and no
request has to read every record: lease deadlines, idle registrations, reserved disk space."""

from __future__ import annotations

from collections.abc import Iterable

from webapi import calcs
from webapi.calcs import Calc
from webapi.contract.calc import CalcState


class Tracker:
    """Kept up to date by `update` on every save of a calc (the store's only writer path)."""

    def __init__(self) -> None:
        self.lease_due: dict[str, float] = {}  # running calc id -> lease expiry
        self.registered: dict[str, tuple[str, float]] = {}  # calc id -> (site, last activity)
        self.outstanding: dict[str, int] = {}  # calc id -> declared bytes not yet received

    def load(self, found: Iterable[Calc]) -> None:
        for calc in found:
            self.update(calc)

    def update(self, calc: Calc) -> None:
        if calc.state is CalcState.RUNNING and calc.lease is not None:
            self.lease_due[calc.id] = calc.lease.expires
        else:
            self.lease_due.pop(calc.id, None)
        if calc.state is CalcState.REGISTERED:
            self.registered[calc.id] = (calc.site, calc.updated)
        else:
            self.registered.pop(calc.id, None)
        left = calcs.outstanding_bytes(calc)
        if left:
            self.outstanding[calc.id] = left
        else:
            self.outstanding.pop(calc.id, None)

    def forget(self, calc_id: str) -> None:
        self.lease_due.pop(calc_id, None)
        self.registered.pop(calc_id, None)
        self.outstanding.pop(calc_id, None)

    def reserved(self) -> int:
        """Bytes promised to uploads in progress (inputs of registered calcs, declared results)."""
        return sum(self.outstanding.values())
