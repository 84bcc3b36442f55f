"""The server's calc record and its state machine, as pure functions.

No IO here; a move the state machine does not allow raises Conflict.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from webapi.contract.calc import (
    CalcState,
    CalcView,
    FileEntry,
    LeaseView,
)
from webapi.errors import BadRequest, Conflict, NotFound


@dataclass(frozen=True, slots=True)
class Lease:
    id: str
    poller: str
    expires: float
    # False until the poller confirms it has the calc (its first heartbeat or progress call):
    # a claim answered into a closed connection then goes back to the queue within the short
    # confirmation window, and without counting as an attempt.
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class StateChange:
    """One step of a calc's state history: the state it entered, when, and why."""

    state: str
    at: float
    reason: str | None = None
    poller: str | None = None  # the lease holder, for a claim


HISTORY_MAX = 50  # a calc requeued for ever keeps only its latest steps


@dataclass(frozen=True, slots=True)
class Calc:
    id: str
    user: str
    site: str
    command: str
    args: tuple[str, ...]
    state: CalcState
    created: float
    updated: float
    timeout: int | None = None
    reason: str | None = None
    attempts: int = 0
    exit_code: int | None = None
    inputs: tuple[FileEntry, ...] = ()
    results: tuple[FileEntry, ...] = ()
    results_declared: bool = False
    lease: Lease | None = None
    request_id: str | None = None
    queued_at: float | None = None
    progress: str | None = None
    # Held by its client: stays registered until released, even with all inputs in (the
    # original protocol's add-calcinfo / allow-wait-calc split).
    held: bool = False
    # Interface-specific registration data kept with the calc (e.g. the original protocol's
    # parameters and file types); set once at registration, never part of the state machine.
    meta: dict[str, Any] | None = field(default=None, hash=False)
    # Results the poller could not (or would not) deliver, with its reason for each; set with
    # the results, answered for them by the original protocol's get-calc-result.
    missing: dict[str, str] | None = field(default=None, hash=False)
    # Each state it entered, oldest first (kept by the store on every save; records written
    # before the history existed start with an empty one).
    history: tuple[StateChange, ...] = ()

    def view(self) -> CalcView:
        """The calc as its owner sees it over HTTP (the lease id stays secret)."""
        return CalcView(
            id=self.id,
            user=self.user,
            site=self.site,
            command=self.command,
            args=self.args,
            state=self.state,
            created=self.created,
            updated=self.updated,
            reason=self.reason,
            timeout=self.timeout,
            attempts=self.attempts,
            exit_code=self.exit_code,
            inputs=self.inputs,
            results=self.results,
            lease=None if self.lease is None else LeaseView(self.lease.poller, self.lease.expires),
            progress=self.progress,
        )

    def to_record(self) -> dict[str, Any]:
        """The calc.yaml document: everything, lease id included (never sent to owners)."""
        doc = dataclasses.asdict(self)
        doc["state"] = str(self.state)
        doc["args"] = list(self.args)
        doc["inputs"] = [dataclasses.asdict(f) for f in self.inputs]
        doc["results"] = [dataclasses.asdict(f) for f in self.results]
        doc["history"] = [dataclasses.asdict(h) for h in self.history]
        return doc

    @classmethod
    def from_record(cls, doc: dict[str, Any]) -> Calc:
        lease = doc.get("lease")
        return cls(
            **{
                **doc,
                "state": CalcState(doc["state"]),
                "args": tuple(doc.get("args") or ()),
                "inputs": tuple(FileEntry(**f) for f in doc.get("inputs") or ()),
                "results": tuple(FileEntry(**f) for f in doc.get("results") or ()),
                "lease": Lease(**lease) if lease else None,
                "history": tuple(StateChange(**h) for h in doc.get("history") or ()),
            }
        )

    def input(self, name: str) -> FileEntry:
        return _find(self.inputs, name, "input", self.id)

    def result(self, name: str) -> FileEntry:
        return _find(self.results, name, "result", self.id)


def with_history(old: Calc | None, new: Calc) -> Calc:
    """`new` with a history step added if it entered a state (or was queued again) since `old`."""
    if old is None:
        steps: tuple[StateChange, ...] = (StateChange(str(CalcState.REGISTERED), new.created),)
        if new.state is CalcState.REGISTERED:
            return replace(new, history=steps)
    else:
        steps = new.history
        same_state = old.state is new.state and old.queued_at == new.queued_at
        if same_state and (old.lease is None) == (new.lease is None):
            return new
    poller = new.lease.poller if new.lease is not None else None
    step = StateChange(str(new.state), new.updated, new.reason, poller)
    return replace(new, history=(*steps, step)[-HISTORY_MAX:])


def _find(files: tuple[FileEntry, ...], name: str, kind: str, calc_id: str) -> FileEntry:
    for f in files:
        if f.name == name:
            return f
    raise NotFound(f"calc {calc_id} declares no {kind} named {name!r}")


def _require(calc: Calc, *states: CalcState, action: str) -> None:
    if calc.state not in states:
        allowed = ", ".join(str(s) for s in states)
        raise Conflict(f"cannot {action} calc {calc.id}: it is {calc.state}, not {allowed}")


def _all_complete(files: tuple[FileEntry, ...]) -> bool:
    return all(f.complete for f in files)


def new_calc(
    *,
    calc_id: str,
    user: str,
    site: str,
    command: str,
    args: tuple[str, ...],
    inputs: tuple[FileEntry, ...],
    timeout: int | None,
    request_id: str | None,
    now: float,
    held: bool = False,
    meta: dict[str, Any] | None = None,
) -> Calc:
    calc = Calc(
        id=calc_id,
        user=user,
        site=site,
        command=command,
        args=args,
        inputs=inputs,
        state=CalcState.REGISTERED,
        created=now,
        updated=now,
        timeout=timeout,
        request_id=request_id,
        held=held,
        meta=meta,
    )
    # Empty files and calcs without inputs need no upload.
    calc = replace(
        calc, inputs=tuple(replace(f, received=f.size) if f.size == 0 else f for f in inputs)
    )
    return _maybe_queue(calc, now)


def settle(calc: Calc, now: float) -> Calc:
    """Apply the automatic transitions (inputs complete → queued; results complete → final)."""
    return _maybe_complete(_maybe_queue(calc, now), now)


def _maybe_queue(calc: Calc, now: float) -> Calc:
    if calc.state is CalcState.REGISTERED and not calc.held and _all_complete(calc.inputs):
        return replace(calc, state=CalcState.QUEUED, queued_at=now, updated=now)
    return calc


def record_input(calc: Calc, name: str, received: int, now: float) -> Calc:
    """Note that `received` bytes of input `name` are on disk (and verified if complete)."""
    _require(calc, CalcState.REGISTERED, action="upload inputs of")
    entry = calc.input(name)
    if not 0 <= received <= entry.size:
        raise BadRequest(f"input {name!r}: {received} bytes is beyond its size {entry.size}")
    if received == entry.received:
        return calc  # nothing new (e.g. a discarded upload that had nothing recorded)
    files = tuple(replace(f, received=received) if f.name == name else f for f in calc.inputs)
    return _maybe_queue(replace(calc, inputs=files, updated=now), now)


def release(calc: Calc, *, now: float) -> Calc:
    """The client lets a held calc go: queued once its inputs are in (repeating is a no-op)."""
    if not calc.held:
        return calc
    _require(calc, CalcState.REGISTERED, action="release")
    return _maybe_queue(replace(calc, held=False, updated=now), now)


def claim(
    calc: Calc, *, lease_id: str, poller: str, expires: float, now: float, confirmed: bool = True
) -> Calc:
    """Lease a queued calc to `poller`; an unconfirmed lease's `expires` is the confirm-by time."""
    _require(calc, CalcState.QUEUED, action="claim")
    return replace(
        calc,
        state=CalcState.RUNNING,
        lease=Lease(lease_id, poller, expires, confirmed),
        reason=None,
        updated=now,
        progress=None,
    )


def check_lease(calc: Calc, lease_id: str) -> None:
    """Raise Conflict unless `lease_id` is the calc's current lease."""
    if calc.lease is None or calc.lease.id != lease_id:
        raise Conflict(
            f"lease {lease_id!r} is no longer held on calc {calc.id} (it is {calc.state})"
        )


def heartbeat(
    calc: Calc, *, lease_id: str, expires: float, progress: str | None, now: float
) -> Calc:
    check_lease(calc, lease_id)
    if calc.state is CalcState.CANCELLED:
        return calc  # the answer tells the poller to stop; nothing to renew
    _require(calc, CalcState.RUNNING, action="heartbeat")
    assert calc.lease is not None
    return replace(
        calc,
        lease=replace(calc.lease, expires=expires, confirmed=True),
        updated=now,
        progress=progress if progress is not None else calc.progress,
    )


def _manifest_key(files: tuple[FileEntry, ...]) -> list[tuple[str, int, str]]:
    return sorted((f.name, f.size, f.sha256) for f in files)


def finish(
    calc: Calc,
    *,
    lease_id: str,
    exit_code: int,
    reason: str | None,
    results: tuple[FileEntry, ...],
    now: float,
    missing: dict[str, str] | None = None,
) -> Calc:
    """Declare the exit code and result manifest, exactly once (same again is a no-op);
    `missing` names results that will not come, and why."""
    check_lease(calc, lease_id)
    if calc.results_declared:
        if calc.exit_code == exit_code and _manifest_key(calc.results) == _manifest_key(results):
            return calc
        raise Conflict(f"calc {calc.id} already declared a different exit code or result list")
    _require(calc, CalcState.RUNNING, action="finish")
    files = tuple(replace(f, received=f.size) if f.size == 0 else f for f in results)
    calc = replace(
        calc,
        exit_code=exit_code,
        reason=reason,
        results=files,
        results_declared=True,
        missing=missing or None,
        updated=now,
    )
    return _maybe_complete(calc, now)


def _maybe_complete(calc: Calc, now: float) -> Calc:
    if calc.state is not CalcState.RUNNING or not calc.results_declared:
        return calc
    if not _all_complete(calc.results):
        return calc
    if calc.exit_code == 0:
        return replace(calc, state=CalcState.SUCCEEDED, lease=None, reason=None, updated=now)
    reason = calc.reason or f"the program exited with code {calc.exit_code}"
    return replace(calc, state=CalcState.FAILED, lease=None, reason=reason, updated=now)


def record_result(calc: Calc, *, lease_id: str, name: str, received: int, now: float) -> Calc:
    check_lease(calc, lease_id)
    _require(calc, CalcState.RUNNING, action="upload results of")
    if not calc.results_declared:
        raise Conflict(f"calc {calc.id}: declare the results with /finish before uploading them")
    entry = calc.result(name)
    if not 0 <= received <= entry.size:
        raise BadRequest(f"result {name!r}: {received} bytes is beyond its size {entry.size}")
    if received == entry.received:
        return calc
    files = tuple(replace(f, received=received) if f.name == name else f for f in calc.results)
    return _maybe_complete(replace(calc, results=files, updated=now), now)


def cancel(calc: Calc, *, reason: str, now: float) -> Calc:
    """Cancel a calc that has not finished; a running calc keeps its lease so the poller learns."""
    if calc.state is CalcState.CANCELLED:
        return calc
    _require(calc, CalcState.REGISTERED, CalcState.QUEUED, CalcState.RUNNING, action="cancel")
    return replace(calc, state=CalcState.CANCELLED, reason=reason, updated=now)


def fail(calc: Calc, *, reason: str, now: float) -> Calc:
    """Admin action: end a calc that has not finished as failed (e.g. a stuck legacy claim)."""
    _require(calc, CalcState.REGISTERED, CalcState.QUEUED, CalcState.RUNNING, action="fail")
    return replace(calc, state=CalcState.FAILED, lease=None, held=False, reason=reason, updated=now)


def lease_expired(calc: Calc, now: float) -> bool:
    return calc.state is CalcState.RUNNING and calc.lease is not None and calc.lease.expires <= now


def unclaim(calc: Calc, *, lease_id: str, reason: str, now: float) -> Calc:
    """The poller gives a calc back before it ran anything (it cannot record it, it stops):
    back to the queue without counting an attempt. A calc that already declared its results is
    past that point and is not taken back."""
    check_lease(calc, lease_id)
    if calc.state is CalcState.CANCELLED:
        return calc
    _require(calc, CalcState.RUNNING, action="unclaim")
    if calc.results_declared:
        raise Conflict(f"calc {calc.id} already declared its results; it cannot be given back")
    poller = calc.lease.poller if calc.lease else "?"
    return _back_to_queue(calc, now, f"requeued: poller {poller!r} gave it back ({reason})")


def _back_to_queue(calc: Calc, now: float, reason: str, attempts: int | None = None) -> Calc:
    return replace(
        calc,
        state=CalcState.QUEUED,
        attempts=calc.attempts if attempts is None else attempts,
        lease=None,
        queued_at=now,
        updated=now,
        results=(),
        results_declared=False,
        exit_code=None,
        progress=None,
        reason=reason,
    )


def expire_lease(calc: Calc, *, max_attempts: int, now: float) -> Calc:
    """A lease ran out: back to the queue, or failed once `max_attempts` leases were lost.

    A lease that was never confirmed went to a poller that never got the calc (it stopped, or
    the answer was lost): the calc goes back without counting an attempt."""
    _require(calc, CalcState.RUNNING, action="expire the lease of")
    poller = calc.lease.poller if calc.lease else "?"
    if calc.lease is not None and not calc.lease.confirmed:
        return _back_to_queue(
            calc, now, f"requeued: poller {poller!r} never confirmed that it got the calc"
        )
    attempts = calc.attempts + 1
    if attempts >= max_attempts:
        return replace(
            calc,
            state=CalcState.FAILED,
            attempts=attempts,
            lease=None,
            updated=now,
            reason=f"lease lost {attempts} times (last poller {poller!r} stopped heartbeating)",
        )
    why = f"requeued: poller {poller!r} stopped heartbeating (attempt {attempts})"
    return _back_to_queue(calc, now, why, attempts)


def expire_queued(calc: Calc, *, now: float, waited: float) -> Calc:
    _require(calc, CalcState.QUEUED, action="expire")
    return replace(
        calc,
        state=CalcState.FAILED,
        updated=now,
        reason=f"expired in the queue after {int(waited)} s: "
        f"no poller of site {calc.site!r} claimed it",
    )


def expire_registered(calc: Calc, *, now: float, idle: float) -> Calc:
    """A calc still waiting for its inputs (or, held, for its release) with nothing new for
    `idle` seconds: its client is gone; it fails rather than wait, or run later, unseen."""
    _require(calc, CalcState.REGISTERED, action="expire")
    what = "released by its client" if calc.held and _all_complete(calc.inputs) else "uploaded"
    return replace(
        calc,
        state=CalcState.FAILED,
        held=False,
        updated=now,
        reason=f"expired: its inputs were not {what} (nothing new for {int(idle)} s)",
    )


def outstanding_bytes(calc: Calc) -> int:
    """Bytes this calc may still write to the server's disk (declared, not yet received)."""
    if calc.state is CalcState.REGISTERED:
        return sum(f.size - f.received for f in calc.inputs)
    if calc.state is CalcState.RUNNING and calc.results_declared:
        return sum(f.size - f.received for f in calc.results)
    return 0


def requeue(calc: Calc, *, now: float) -> Calc:
    """Admin action: run the calc again from its inputs."""
    if calc.state is CalcState.REGISTERED:
        raise Conflict(f"calc {calc.id} is still waiting for its inputs; nothing to requeue")
    calc = replace(
        calc,
        state=CalcState.REGISTERED,
        lease=None,
        results=(),
        results_declared=False,
        exit_code=None,
        reason="requeued by an admin",
        progress=None,
        updated=now,
    )
    return _maybe_queue(calc, now)


def request_key(request_id: str) -> str:
    """A file-name-safe key for a client's idempotency `request_id`."""
    return hashlib.sha256(request_id.encode("utf-8")).hexdigest()


def queue_entry(calc: Calc) -> str:
    """The queue index marker name: sorts by queue time, then id."""
    return f"{int((calc.queued_at or calc.created) * 1e6):020d}-{calc.id}"
