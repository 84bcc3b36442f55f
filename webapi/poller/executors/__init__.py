"""Start, watch and stop an allow-listed program for one calc: always an argv list, never a shell.

`local` runs the program on this host under `exitwrap` (webapi.poller.executors.local); `slurm`
and `pbs` hand the same argv to the batch system (webapi.poller.executors.batch). Either way
the program outlives a killed poller, and its exit file tells a restarted poller how it ended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from webapi.fs import write_atomic
from webapi.poller.workdir import WorkDir

if TYPE_CHECKING:
    from webapi.poller.config import BatchPoll

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
    def start(
        self,
        argv: Sequence[str],
        wd: WorkDir,
        options: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
    ) -> Started:
        """Start `argv` in the work dir; `env` adds variables (e.g. the original's CALC_DIR)."""

    def poll(self, wd: WorkDir, started: Started) -> Outcome | None: ...

    def stop(self, wd: WorkDir, started: Started, grace: float = 5.0) -> None: ...


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The poller's environment minus its secrets (tokens, passwords)."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if not k.startswith(_SECRET_PREFIXES)}


# The exit file is made before the program starts, this large: the wrapper can then always
# record the exit status in place, even on a full disk (no new block is needed).
EXIT_FILE_BYTES = 512


def reserve_exit_file(path: Path) -> None:
    """Write the 'still running' exit file, fsynced; OSError (e.g. disk full) means the program
    must not be started: its end could not be recorded, and it might then be run twice."""
    write_atomic(path, exit_record({"state": "running"}))


def exit_record(data: dict[str, object]) -> bytes:
    """An exit file's content: JSON padded with spaces to the reserved size."""
    raw = json.dumps(data).encode()
    return raw + b" " * max(0, EXIT_FILE_BYTES - len(raw) - 1) + b"\n"


def read_exit_file(path: Path) -> Outcome | None:
    """How the program ended, or None while it runs (or before the wrapper started)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return Outcome(1, "the exit status file is unreadable", lost=True)
    if "exit_code" not in data:
        return None
    return Outcome(int(data["exit_code"]), data.get("reason"))


def make_executor(name: str, batch_poll: BatchPoll | None = None) -> Executor:
    """The executor for a command's `executor:` setting; `batch_poll` paces scheduler queries."""
    if name == "local":
        from webapi.poller.executors.local import LocalExecutor

        return LocalExecutor()
    if name in ("slurm", "pbs"):
        from webapi.poller.executors.batch import BatchExecutor

        return BatchExecutor(name, poll=batch_poll)
    raise ValueError(f"unknown executor {name!r}")
