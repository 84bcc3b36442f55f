"""The poller's local record of each calc (a JSON file, written atomically) so a restart resumes.

The record doubles as the outbox: the outcome (exit code, reason, result manifest) is written here
before it is sent, and a calc whose outcome is recorded is never run again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from webapi.errors import ConfigError


class Phase(StrEnum):
    CLAIMED = "claimed"  # lease held, inputs being fetched
    RUNNING = "running"  # program started (pid recorded)
    EXITED = "exited"  # outcome recorded, not yet acknowledged by the server (the outbox)
    DONE = "done"  # server acknowledged the outcome and every result; nothing left to do
    DROPPED = "dropped"  # lease lost or calc cancelled; nothing to send


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class CalcRecord:
    calc_id: str
    command: str
    args: tuple[str, ...]
    lease_id: str
    heartbeat: float
    phase: Phase = Phase.CLAIMED
    timeout: float | None = None
    work_dir: str = ""
    pid: int | None = None
    job_id: str | None = None  # batch-system job id (slurm/pbs)
    started: float | None = None
    kill_reason: str | None = None  # set before we kill the program (timeout/cancel)
    exit_code: int | None = None
    reason: str | None = None
    results: tuple[FileEntry, ...] = ()
    finish_acked: bool = False
    uploaded: tuple[str, ...] = ()
    runs: int = 0  # how many times the program was started for this calc
    updated: float = field(default_factory=time.time)

    def with_(self, **changes: Any) -> CalcRecord:
        return replace(self, updated=time.time(), **changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = str(self.phase)
        data["args"] = list(self.args)
        data["results"] = [asdict(r) for r in self.results]
        data["uploaded"] = list(self.uploaded)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CalcRecord:
        data = dict(data)
        data["phase"] = Phase(data["phase"])
        data["args"] = tuple(data.get("args") or ())
        data["results"] = tuple(FileEntry(**r) for r in data.get("results") or ())
        data["uploaded"] = tuple(data.get("uploaded") or ())
        return cls(**data)


def write_atomic(path: Path, text: str) -> None:
    """Write via temp file + fsync + os.replace + dir fsync: a crash leaves the old or new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class StateDir:
    """`<state_dir>/<calc id>.json` files; the poller is their only writer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"state_dir {root}: {exc.strerror}") from None

    def _path(self, calc_id: str) -> Path:
        # Calc ids come from the server; keep them to a plain file name.
        if not calc_id or "/" in calc_id or calc_id.startswith(".") or "\x00" in calc_id:
            raise ValueError(f"unsafe calc id {calc_id!r}")
        return self.root / f"{calc_id}.json"

    def save(self, record: CalcRecord) -> CalcRecord:
        write_atomic(self._path(record.calc_id), json.dumps(record.to_json(), indent=1))
        return record

    def load(self, calc_id: str) -> CalcRecord | None:
        path = self._path(calc_id)
        try:
            return CalcRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def pending(self) -> Iterator[CalcRecord]:
        """Records that still need work after a restart (not done, not dropped), oldest first."""
        records = []
        for path in self.root.glob("*.json"):
            try:
                record = CalcRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if record.phase not in (Phase.DONE, Phase.DROPPED):
                records.append(record)
        yield from sorted(records, key=lambda r: r.updated)

    def prune(self, older_than: float) -> int:
        """Delete done/dropped records last updated before `older_than` (epoch seconds)."""
        removed = 0
        for path in self.root.glob("*.json"):
            try:
                record = CalcRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if record.phase in (Phase.DONE, Phase.DROPPED) and record.updated < older_than:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
