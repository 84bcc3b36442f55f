"""The `local` executor: the program runs on this host under `exitwrap`, in its own session."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from webapi.poller.executors import (
    Outcome,
    Started,
    clean_env,
    read_exit_file,
    reserve_exit_file,
)
from webapi.poller.workdir import WorkDir

log = logging.getLogger(__name__)
WRAPPER = "webapi.poller.executors.exitwrap"


class LocalExecutor:
    """Runs the program as a child of `python -m webapi.poller.executors.exitwrap` in a new
    session (its own process group), so a stop or a timeout kills the whole group and the
    program outlives a killed poller."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(
        self,
        argv: Sequence[str],
        wd: WorkDir,
        options: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
    ) -> Started:
        """Start `argv` in the work dir; `env` adds variables (e.g. the original's CALC_DIR)."""
        wd.create()
        reserve_exit_file(wd.exit_file)
        wrapper = [sys.executable, "-m", WRAPPER, str(wd.exit_file), "--", *argv]
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
