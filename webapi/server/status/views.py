"""What each status page shows, built from the store and the config as typed values (no HTML)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webapi.calcs import Calc, StateChange
from webapi.contract.calc import CalcState, FileEntry
from webapi.contract.timefmt import format_ts
from webapi.contract.workfiles import STDERR_NAME, STDOUT_NAME
from webapi.errors import NotFound
from webapi.server.config import ServerConfig
from webapi.store.base import JobStore

Reason = Callable[[Calc], str | None]  # the reason the API gives for a calc (its `reason` field)
TAIL_BYTES = 4000
EXPIRES_SOON_SECONDS = 3600  # a queued calc this close to its queue expiry says so
WAITING = (CalcState.REGISTERED, CalcState.QUEUED)
CALCS_SHOWN = 500  # the calc list's length (the queue always shows every waiting calc)


def ago(seconds: float) -> str:
    """A duration as a person reads it: '42 s', '7 min', '3.5 h'."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    return f"{seconds / 3600:.1f} h"


def when(ts: float | None) -> str:
    """An epoch time as the page shows it: UTC, to the second."""
    return "" if ts is None else format_ts(ts)[:19].replace("T", " ") + " UTC"


@dataclass(frozen=True, slots=True)
class PollerRow:
    poller: str
    user: str | None  # shown to admins only
    seen_ago: str
    version: str
    live: bool


@dataclass(frozen=True, slots=True)
class SiteRow:
    name: str
    commands: tuple[str, ...]
    pollers: tuple[PollerRow, ...]
    by_state: tuple[tuple[str, int], ...]  # every state, in state-machine order


@dataclass(frozen=True, slots=True)
class QueueRow:
    id: str
    user: str
    site: str
    command: str
    state: str
    waiting: str  # for how long
    why: str  # the reason it waits


@dataclass(frozen=True, slots=True)
class CalcRow:
    id: str
    user: str
    site: str
    command: str
    state: str
    updated: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileRow:
    name: str
    size: int
    received: int
    sha256: str


@dataclass(frozen=True, slots=True)
class HistoryRow:
    state: str
    at: str
    reason: str
    poller: str


@dataclass(frozen=True, slots=True)
class CalcDetail:
    id: str
    user: str
    site: str
    command: str
    args: str
    state: str
    reason: str
    attempts: int
    exit_code: str
    lease: str  # holder and expiry, or ""
    progress: str
    created: str
    updated: str
    history: tuple[HistoryRow, ...]
    inputs: tuple[FileRow, ...]
    results: tuple[FileRow, ...]
    stdout_tail: str | None  # None: no such result (yet)
    stderr_tail: str | None
    fetch_commands: tuple[str, ...]
    actions: tuple[str, ...]  # the admin actions its state allows


def visible_calcs(
    store: JobStore, user: str, admin: bool, *, state: CalcState | None = None
) -> list[Calc]:
    """The calcs this person may see: an admin all, anyone else only their own."""
    return store.list_calcs(user=None if admin else user, state=state, site=None)


def sites(store: JobStore, conf: ServerConfig, user: str, admin: bool) -> list[SiteRow]:
    now = time.time()
    # From the store's census (a stat per record, a parse only of those changed since the last
    # count or the finals index), not a listing that would build every calc.
    counts: dict[str, Counter[str]] = {}
    for (where, state, owner), n in store.census().by_user.items():
        if admin or owner == user:
            counts.setdefault(where, Counter())[state] += n
    rows = []
    for name, site in sorted(conf.sites.items()):
        pollers = tuple(
            PollerRow(
                poller=s.poller,
                user=s.user if admin else None,
                seen_ago=ago(now - s.seen),
                version=s.agent or "unknown",
                live=now - s.seen <= conf.poller_absent_seconds,
            )
            for s in store.poller_sightings(name)
        )
        by_state = tuple((str(st), counts.get(name, Counter())[str(st)]) for st in CalcState)
        rows.append(SiteRow(name, tuple(site.commands), pollers, by_state))
    return rows


def _why_waiting(calc: Calc, conf: ServerConfig, api_reason: str | None, now: float) -> str:
    parts = []
    if calc.state is CalcState.REGISTERED:
        if calc.held:
            parts.append("held by its client until it is released")
        missing = [f.name for f in calc.inputs if not f.complete]
        if missing:
            parts.append(f"waiting for {len(missing)} input file(s) to be uploaded")
    if api_reason:
        parts.append(api_reason)
    site = conf.sites.get(calc.site)
    if site is None:
        parts.append(f"site {calc.site} is no longer configured")
    elif calc.command not in site.commands:
        parts.append(f"command {calc.command} is no longer allowed on site {calc.site}")
    if calc.state is CalcState.QUEUED:
        left = (calc.queued_at or calc.created) + conf.queued_expiry_seconds - now
        if left <= EXPIRES_SOON_SECONDS:
            parts.append(f"expires from the queue in {ago(left)}")
    else:
        left = calc.updated + conf.registered_expiry_seconds - now
        if left <= EXPIRES_SOON_SECONDS:
            parts.append(f"expires unless its inputs arrive within {ago(left)}")
    return "; ".join(parts) or "waiting"


def queue(
    store: JobStore, conf: ServerConfig, user: str, admin: bool, reason: Reason
) -> list[QueueRow]:
    """Every waiting calc (registered or queued) with why it waits, oldest first."""
    now = time.time()
    waiting = [c for c in visible_calcs(store, user, admin) if c.state in WAITING]
    waiting.sort(key=lambda c: (c.queued_at or c.created, c.id))
    return [
        QueueRow(
            id=c.id,
            user=c.user,
            site=c.site,
            command=c.command,
            state=str(c.state),
            waiting=ago(now - (c.queued_at or c.created)),
            why=_why_waiting(c, conf, reason(c), now),
        )
        for c in waiting
    ]


def calc_rows(
    store: JobStore,
    user: str,
    admin: bool,
    state: CalcState | None,
    site: str | None,
    reason: Reason,
) -> tuple[list[CalcRow], int]:
    """The newest-changed calcs (at most CALCS_SHOWN), and how many there are in all."""
    found = visible_calcs(store, user, admin, state=state)
    if site is not None:
        found = [c for c in found if c.site == site]
    found.sort(key=lambda c: -c.updated)
    rows = [
        CalcRow(c.id, c.user, c.site, c.command, str(c.state), when(c.updated), reason(c) or "")
        for c in found[:CALCS_SHOWN]
    ]
    return rows, len(found)


def _files(entries: tuple[FileEntry, ...]) -> tuple[FileRow, ...]:
    return tuple(FileRow(f.name, f.size, f.received, f.sha256) for f in entries)


def _history(steps: tuple[StateChange, ...]) -> tuple[HistoryRow, ...]:
    return tuple(HistoryRow(h.state, when(h.at), h.reason or "", h.poller or "") for h in steps)


def _tail(store: JobStore, calc: Calc, name: str) -> str | None:
    if not any(f.name == name and f.complete for f in calc.results):
        return None
    try:
        fh, size = store.open_file(calc.id, "results", name)
    except (NotFound, OSError):
        return None
    with fh:
        fh.seek(max(0, size - TAIL_BYTES))
        return fh.read(TAIL_BYTES).decode("utf-8", "replace")


def actions_for(calc: Calc) -> tuple[str, ...]:
    """The admin actions the state machine allows from the calc's state."""
    out = []
    if calc.state in (CalcState.REGISTERED, CalcState.QUEUED, CalcState.RUNNING):
        out += ["cancel", "fail"]
    if calc.state is not CalcState.REGISTERED:
        out.append("requeue")
    return tuple(out)


def find_calc(store: JobStore, calc_id: str, user: str, admin: bool) -> Calc:
    """The calc if this person may see it; NotFound alike for a missing calc and another
    user's (the page does not tell which calc ids exist)."""
    try:
        calc = store.get(calc_id)
    except NotFound:
        calc = None
    if calc is None or not (admin or calc.user == user):
        raise NotFound("no such calc, or not one of yours: check the id in the calc list")
    return calc


def detail(store: JobStore, calc: Calc, reason: Reason, server_url: str) -> CalcDetail:
    now = time.time()
    lease = ""
    if calc.lease is not None:
        left = calc.lease.expires - now
        lease = f"{calc.lease.poller} (lease ends in {ago(left)})"
    fetch = (
        f"extcomp-api calcs show {calc.id} --url {server_url}",
        f"extcomp-api calcs fetch {calc.id} --url {server_url} --results ./{calc.id}",
    )
    return CalcDetail(
        id=calc.id,
        user=calc.user,
        site=calc.site,
        command=calc.command,
        args=" ".join(calc.args),
        state=str(calc.state),
        reason=reason(calc) or "",
        attempts=calc.attempts,
        exit_code="" if calc.exit_code is None else str(calc.exit_code),
        lease=lease,
        progress=calc.progress or "",
        created=when(calc.created),
        updated=when(calc.updated),
        history=_history(calc.history),
        inputs=_files(calc.inputs),
        results=_files(calc.results),
        stdout_tail=_tail(store, calc, STDOUT_NAME),
        stderr_tail=_tail(store, calc, STDERR_NAME),
        fetch_commands=fetch,
        actions=actions_for(calc),
    )


def api_reason(render: Callable[[Calc], dict[str, Any]]) -> Reason:
    """The `reason` field of the API's calc object, from the app's own renderer."""

    def reason(calc: Calc) -> str | None:
        value = render(calc).get("reason")
        return value if isinstance(value, str) else None

    return reason
