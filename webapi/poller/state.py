"""The poller's record of each calc, for either protocol: a JSON file per calc, written atomically.

The record doubles as the outbox: the outcome (exit code, reason, results) is written here before
it is sent, and a calc whose outcome is recorded is never run again. One poller per protocol owns
a state dir (an flock says so); it keeps the set of unfinished records in memory after one scan,
so finding work to resume does not read every record again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from webapi.contract.calc import FileEntry
from webapi.errors import ConfigError
from webapi.fs import OwnerLock, is_temp, write_atomic

log = logging.getLogger(__name__)


class Phase(StrEnum):
    CLAIMED = "claimed"  # the calc is ours; inputs being fetched
    RUNNING = "running"  # program started (pid or batch job id recorded)
    EXITED = "exited"  # outcome recorded, not yet acknowledged by the server (the outbox)
    DONE = "done"  # the server acknowledged the outcome and every result
    DROPPED = "dropped"  # lease lost or calc cancelled; nothing to send


FINISHED = frozenset({Phase.DONE, Phase.DROPPED})


@dataclass(frozen=True, slots=True)
class CalcRecord:
    """What this poller knows about one calc. `key` is the calc's id in its protocol (a calc id
    or an original-protocol accept_id): it names the state file and the work dir."""

    key: str
    protocol: str
    site: str
    command: str = ""
    args: tuple[str, ...] = ()
    phase: Phase = Phase.CLAIMED
    lease_id: str = ""  # native protocol: the lease the server granted
    heartbeat: float = 60.0
    timeout: float | None = None
    inputs: tuple[FileEntry, ...] = ()
    wanted: tuple[str, ...] = ()  # original protocol: the result names asked for
    pid: int | None = None
    job_id: str | None = None  # batch-system job id (slurm/pbs)
    started: float | None = None
    kill_reason: str | None = None  # set before the program is stopped (timeout, cancel)
    exit_code: int | None = None
    reason: str | None = None
    verdict: str = ""  # original protocol: "calc end" or "abnormal", decided once
    results: tuple[FileEntry, ...] = ()
    acked: tuple[str, ...] = ()  # the steps the server has confirmed, in order
    runs: int = 0  # how many times the program was started for this calc
    updated: float = field(default_factory=time.time)

    def with_(self, **changes: Any) -> CalcRecord:
        return replace(self, updated=time.time(), **changes)

    def ack(self, step: str) -> CalcRecord:
        return self if step in self.acked else self.with_(acked=(*self.acked, step))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = str(self.phase)
        for key in ("args", "wanted", "acked"):
            data[key] = list(data[key])
        data["inputs"] = [f.manifest_json() for f in self.inputs]
        data["results"] = [f.manifest_json() for f in self.results]
        return data

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CalcRecord:
        data = _upgrade(raw)
        data["phase"] = Phase(data["phase"])
        for key in ("args", "wanted", "acked"):
            data[key] = tuple(data.get(key) or ())
        for key in ("inputs", "results"):
            data[key] = tuple(FileEntry(**f) for f in data.get(key) or ())
        return cls(**data)


def _upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """A record written by version 0.1 (one format per protocol) in today's form."""
    data = dict(raw)
    if "key" in data:
        return data
    if "calc_id" in data:  # the native poller's
        data["key"], data["protocol"] = data.pop("calc_id"), "native"
        data.setdefault("site", "")
        data.pop("work_dir", None)
        acked = ["finish"] if data.pop("finish_acked", False) else []
        data["acked"] = acked + [f"result:{n}" for n in data.pop("uploaded", ())]
    elif "accept_id" in data:  # the original-protocol poller's (in <state_dir>/mint/)
        data["key"], data["protocol"] = data.pop("accept_id"), "mint"
        data["verdict"] = data.pop("result", "")
    return data


def _read(path: Path) -> CalcRecord | None:
    try:
        return CalcRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("unreadable state record %s (%s); skipped", path, exc)
        return None


class StateDir:
    """`<root>/<key>.json` records of both protocols; `claim_ownership` makes this process the
    only poller of its protocol writing here."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"state_dir {root}: {exc.strerror}") from None
        self._open: dict[str, CalcRecord] | None = None  # unfinished records, once scanned
        self._owner: OwnerLock | None = None

    def claim_ownership(self, protocol: str) -> None:
        """Hold `.owner-<protocol>` locked for this process's life; ConfigError if another
        poller of the same protocol already uses this state dir (it would run calcs twice)."""
        owner = OwnerLock(self.root / f".owner-{protocol}")
        owner.acquire(
            f"state_dir {self.root} ({protocol} poller)", "give each poller its own state_dir"
        )
        self._owner = owner

    def release_ownership(self) -> None:
        if self._owner is not None:
            self._owner.release()
            self._owner = None

    def _path(self, key: str) -> Path:
        # Keys come from a server: keep them to a plain file name.
        if not key or "/" in key or key.startswith((".", "~")) or "\x00" in key:
            raise ValueError(f"unsafe calc id {key!r}")
        return self.root / f"{key}.json"

    def _scan(self) -> dict[str, CalcRecord]:
        if self._open is None:
            self._open = {}
            self._adopt_old_mint_records()
            for path in self.root.glob("*.json"):
                record = _read(path)
                if record is not None and record.phase not in FINISHED:
                    self._open[record.key] = record
        return self._open

    def _adopt_old_mint_records(self) -> None:
        """Version 0.1 kept the original-protocol poller's records in `mint/`: move them here."""
        old = self.root / "mint"
        for path in sorted(old.glob("*.json")) if old.is_dir() else ():
            record = _read(path)
            if record is not None:
                self.save(record)
                path.unlink()

    def save(self, record: CalcRecord) -> CalcRecord:
        write_atomic(self._path(record.key), json.dumps(record.to_json(), indent=1).encode())
        if self._open is not None:
            if record.phase in FINISHED:
                self._open.pop(record.key, None)
            else:
                self._open[record.key] = record
        return record

    def load(self, key: str) -> CalcRecord | None:
        if self._open is not None and key in self._open:
            return self._open[key]
        return _read(self._path(key))

    def pending(self, protocol: str | None = None) -> list[CalcRecord]:
        """Unfinished records (of one protocol), oldest first: the work a restart resumes."""
        records = [r for r in self._scan().values() if protocol in (None, r.protocol)]
        return sorted(records, key=lambda r: r.updated)

    def records(self) -> Iterator[CalcRecord]:
        """Every readable record, finished or not (reads them all)."""
        for path in self.root.glob("*.json"):
            record = _read(path)
            if record is not None:
                yield record

    def prune(self, older_than: float) -> int:
        """Delete finished records last updated before `older_than` (epoch seconds), and temp
        files left by a crash."""
        removed = 0
        for path in self.root.iterdir():
            if is_temp(path.name):
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < older_than:
                        path.unlink()
                continue
            if path.suffix != ".json":
                continue
            record = _read(path)
            if record is not None and record.phase in FINISHED and record.updated < older_than:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
