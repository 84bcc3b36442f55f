"""Space out the new ssh connections this workflow host opens to one external host.

Every `extcomp-ssh` process of this account takes its turn through a per-host lock file
(fcntl) and a timestamp file under the runner's state dir, so concurrent steps never open
connections to one host faster than the minimum interval: a burst of steps stays under sshd's
`MaxStartups` and the rate limits sites put in front of sshd (fail2ban, firewall hashlimits).
A step that finds its ControlMaster connection open needs no new connection and no turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from runner.errors import UsageError
from runner.record import state_root
from runner.steps import HostSpec

log = logging.getLogger(__name__)
ENV = "EXTCOMP_SSH_MIN_INTERVAL"
# One second: an ssh handshake takes ~0.3 s here, so at most one is ever half-open per host,
# and a step (one connection, shared by all its phases) waits at most a second in a burst.
DEFAULT_MIN_INTERVAL_S = 1.0
MAX_MIN_INTERVAL_S = 3600.0


def min_interval() -> float:
    """The interval from $EXTCOMP_SSH_MIN_INTERVAL (seconds, 0 = off), else the default."""
    raw = os.environ.get(ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_MIN_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_MIN_INTERVAL_S:  # also refuses nan
        raise UsageError(
            f"{ENV}={raw!r} (or --ssh-min-interval) is not a number of seconds: give 0 (off) to "
            f"{MAX_MIN_INTERVAL_S:g}, e.g. {ENV}=1"
        )
    return value


def gate_dir() -> Path:
    return state_root() / "ssh-gate"


def host_name(host: HostSpec) -> str:
    """The file name of a host's lock and timestamp: readable, and unique by a short hash."""
    where = f"{host.host}:{host.port or 22}"
    tag = hashlib.sha256(where.encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', host.host)[:64]}-{host.port or 22}-{tag}"


def wait_turn(host: HostSpec, needed: Callable[[], bool], interval: float | None = None) -> float:
    """Wait until `interval` seconds have passed since the last new connection any process of
    this account opened to `host`, then record this one; returns the seconds waited.

    `needed` is asked again after the wait: a connection another step opened meanwhile (a
    shared ControlMaster) makes this one unnecessary, and then nothing is recorded.
    """
    interval = min_interval() if interval is None else interval
    if interval <= 0:
        return 0.0
    base = gate_dir()
    name = host_name(host)
    stamp = base / f"{name}.last"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(base / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(
            f"cannot use the ssh connection lock in {base}: {exc.strerror or exc}; make the "
            f"state dir writable (EXTCOMP_STATE_DIR), or set {ENV}=0"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the others wait here, in turn
        last = _read_stamp(stamp)
        # Never longer than one interval: a clock set back must not stall every step.
        wait = min(interval, last + interval - time.time())
        waited = 0.0
        if wait > 0:
            time.sleep(wait)
            waited = wait
        if not needed():
            log.debug("ssh gate: %s: a connection opened meanwhile; none needed", host.label())
            return waited
        now = time.time()
        _write_stamp(stamp, now)
        log.info(
            "ssh gate: new connection to %s at %.6f (waited %.3f s)", host.label(), now, waited
        )
        return waited
    finally:
        os.close(fd)  # releases the lock


def _read_stamp(path: Path) -> float:
    try:
        return float(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0.0  # none yet, or damaged: the next connection may go at once


def _write_stamp(path: Path, when: float) -> None:
    """Atomically (temp file + rename): a reader never sees half a number."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{when:.6f}\n")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
