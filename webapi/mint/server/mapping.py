"""How a calc of our state machine looks through the original protocol: progress, status, files."""

from __future__ import annotations

from typing import Any

from webapi.calcs import Calc
from webapi.contract.calc import CalcState
from webapi.contract.workfiles import STDERR_NAME, STDOUT_NAME
from webapi.mint.codec.wire import JP_STDERR, JP_STDOUT
from webapi.server.config import ServerConfig

# The original's progress values, in order.
NOT_START, SENDING, COMPLETE_SEND, RUNNING = (
    "not start",
    "sending params",
    "complete send",
    "running",
)
CALC_END, GETTING, GOT = "calc end", "getting return", "got return"
PROGRESS = (NOT_START, SENDING, COMPLETE_SEND, RUNNING, CALC_END, GETTING, GOT)
# The original's order for the poller's calls after calc-params: the progress each may follow
# (one step on; calc-end also straight after complete send: our poller ends a calc it refused
# to start that way; send-results again at getting return: a retry of an upload cut short) …
FOLLOWS = {
    "calc-params-complete": (SENDING,),
    "calc-start": (COMPLETE_SEND,),
    "calc-end": (RUNNING, COMPLETE_SEND),
    "send-results": (CALC_END, GETTING),
    "end-send": (GOT,),
}
NEEDS = {
    "calc-params-complete": f"{SENDING!r} (the calc taken with calc-params)",
    "calc-start": f"{COMPLETE_SEND!r}",
    "calc-end": f"{RUNNING!r} or {COMPLETE_SEND!r}",
    "send-results": f"{CALC_END!r}",
    "end-send": "the results (send-results)",
}
# … and the call a poller sends next at each progress.
NEXT_CALL = {
    NOT_START: "calc-params",
    SENDING: "calc-params-complete",
    COMPLETE_SEND: "calc-start",
    RUNNING: "calc-end",
    CALC_END: "send-results",
    GETTING: "send-results",
    GOT: "end-send",
}
# Kept in calc.progress after calc-end reported "abnormal", until the calc is final.
ABNORMAL = " (abnormal)"
LEGACY_POLLER = "mint-poller"  # the lease holder name of claims made through this interface
NO_EXPIRY = 100 * 365 * 86400.0  # legacy_lease 0: the lease outlives any program
NATIVE_LOGS = {JP_STDOUT: STDOUT_NAME, JP_STDERR: STDERR_NAME}


def progress_of(calc: Calc) -> str:
    """`not start` … `got return` for any calc, whichever poller runs it."""
    if calc.state in (CalcState.REGISTERED, CalcState.QUEUED):
        return NOT_START
    if calc.state is CalcState.RUNNING:
        value = (calc.progress or "").removesuffix(ABNORMAL)
        if value in PROGRESS:
            return value
        # Claimed, parameters not yet confirmed (either poller kind downloads inputs first);
        # a native poller's own progress text means its program is running.
        return SENDING if calc.progress is None else RUNNING
    return GOT  # final: whatever results there are can be fetched


def status_of(calc: Calc) -> str:
    """`none`, `completed` or `abnormal` (cancelled calcs are answered as errors)."""
    if calc.state is CalcState.SUCCEEDED:
        return "completed"
    if calc.state is CalcState.FAILED:
        return "abnormal"
    if calc.state is CalcState.RUNNING and progress_of(calc) in (CALC_END, GETTING):
        return "abnormal" if (calc.progress or "").endswith(ABNORMAL) else "completed"
    return "none"


def legacy_lease_seconds(conf: ServerConfig, site: str) -> float:
    return float(conf.site_legacy_lease(site)) or NO_EXPIRY


def fits_original_poller(conf: ServerConfig, site: str) -> Any:
    """Which queued calcs an original poller can run: no arguments (it runs a bare command) and
    a command still on the site's list (it would run whatever we send, through a shell)."""
    site_conf = conf.sites.get(site)
    commands = site_conf.commands if site_conf is not None else ()

    def fits(calc: Calc) -> bool:
        return not calc.args and calc.command in commands

    return fits


def wanted_results(calc: Calc) -> list[str]:
    """The result names to answer with: those asked at registration, else all results."""
    meta = calc.meta or {}
    names = meta.get("results") if meta.get("protocol") == "mint" else None
    if isinstance(names, list):
        return [str(n) for n in names]
    return [f.name for f in calc.results]


def result_source(calc: Calc, name: str) -> str | None:
    """The stored result that answers for `name` (a native poller's logs stand in for the two
    log names), or None if there is none."""
    have = {f.name for f in calc.results if f.complete}
    if name in have:
        return name
    native = NATIVE_LOGS.get(name)
    return native if native in have else None
