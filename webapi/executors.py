"""Start, watch and stop an allow-listed program for one calc: always an argv list, never a shell.

The `local` executor runs the program under `webapi.runwrap` in a new session (its own process
group), so a stop or a timeout kills the whole group, and the program outlives a killed poller:
the wrapper's exit file tells a restarted poller how it ended. `slurm` and `pbs` hand the same
argv to the batch system through a Python batch script (see `webapi/batch.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from webapi.workdir import WorkDir

log = logging.getLogger(__name__)

# Timed-out programs report 124, as GNU timeout(1) does.
TIMEOUT_EXIT = 124
# Environment variables the poller may hold that a program must never see.
_SECRET_PREFIXES = ("EXTCOMP_",)


@dataclass(frozen=True, slots=True)
class Started:
    """How to find a started program again: a local pid or a batch job id."""

    pid: int | None = None
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a program ended. `lost` means it vanished without a recorded status."""

    exit_code: int
    reason: str | None = None
    lost: bool = False


class Executor(Protocol):
    def start(self, argv: Sequence[str], wd: WorkDir, options: Sequence[str]) -> Started: ...

    def poll(self, wd: WorkDir, started: Started) -> Outcome | None: ...

    def stop(self, wd: WorkDir, started: Started, grace: float = 5.0) -> None: ...


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The poller's environment minus its secrets (tokens, passwords)."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if not k.startswith(_SECRET_PREFIXES)}


def read_exit_file(path: Path) -> Outcome | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return Outcome(1, "the exit status file is unreadable", lost=True)
    return Outcome(int(data["exit_code"]), data.get("reason"))


class LocalExecutor:
    """Runs the program on this host as a child of `python -m webapi.runwrap`."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(
        self, argv: Sequence[str], wd: WorkDir, options: Sequence[str] = (),
        *, env: Mapping[str, str] | None = None,
    ) -> Started:  # fmt: skip
        """Start `argv` in the work dir; `env` adds variables (e.g. the original's CALC_DIR)."""
        wd.create()
        wd.exit_file.unlink(missing_ok=True)
        wrapper = [sys.executable, "-m", "webapi.runwrap", str(wd.exit_file), "--", *argv]
        with wd.stdout.open("ab") as out, wd.stderr.open("ab") as err:
            proc = subprocess.Popen(
                wrapper,
                cwd=wd.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
                env={**clean_env(), **(env or {})},
            )
        self._children[proc.pid] = proc
        log.info("started %s (pid %d) in %s", argv[0], proc.pid, wd.cwd)
        return Started(pid=proc.pid)

    def _alive(self, wd: WorkDir, pid: int) -> bool:
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        # Not our child (the poller restarted): make sure the pid is still our wrapper. Right
        # after fork the cmdline is still the parent's, so look again briefly before deciding.
        for _ in range(5):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return False
            if str(wd.exit_file).encode() in cmdline:
                return True
            time.sleep(0.05)
        return False

    def poll(self, wd: WorkDir, started: Started) -> Outcome | None:
        if started.pid is None:
            return Outcome(1, "no process recorded for this calc", lost=True)
        alive = self._alive(wd, started.pid)
        outcome = read_exit_file(wd.exit_file)
        if outcome is not None:
            child = self._children.pop(started.pid, None)
            if child is not None:
                # The wrapper exits right after writing the exit file; reap it.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=5)
            return outcome
        if alive:
            return None
        self._children.pop(started.pid, None)
        return Outcome(1, "the program stopped without recording its exit status", lost=True)

    def stop(self, wd: WorkDir, started: Started, grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `grace` seconds."""
        if started.pid is None:
            return
        pgid = started.pid
        if not self._group_alive(pgid):
            return
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            child = self._children.get(pgid)
            if child is not None:
                child.poll()
            if not self._group_alive(pgid):
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        child = self._children.get(pgid)
        if child is not None:
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                log.warning("process group %d did not die", pgid)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def make_executor(name: str) -> Executor:
    """The executor for a command's `executor:` setting."""
    if name == "local":
        return LocalExecutor()
    if name in ("slurm", "pbs"):
        from webapi.batch import BatchExecutor

        return BatchExecutor(name)
    raise ValueError(f"unknown executor {name!r}")
