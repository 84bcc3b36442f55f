"""`extcomp-ssh sweep`: list and remove a host's orphaned work dirs through the same gate."""

from __future__ import annotations

import math
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.driver import StepDriver
from runner.errors import RemoteError, UsageError
from runner.record import StepRecord, StepStore, spec_to_dict
from runner.steps import HostSpec, StepSpec


@dataclass(frozen=True, slots=True)
class SweptDir:
    """One work dir the host found old enough, and what it did (or would do) with it."""

    id: str
    action: str  # removed | would remove | skipped
    state: str | None = None  # the helper's view: created, exited, lost, running, ...
    last_activity: float | None = None  # epoch seconds
    bytes: int | None = None
    why: str = ""


@dataclass(frozen=True, slots=True)
class SweepReport:
    host: str
    base: str
    older_than_days: float
    dry_run: bool
    dirs: tuple[SweptDir, ...]

    @property
    def removed(self) -> int:
        return sum(1 for d in self.dirs if d.action == "removed")


def _dir(raw: dict[str, Any]) -> SweptDir:
    def opt(key: str, kind: type) -> Any:
        value = raw.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    return SweptDir(
        id=str(raw.get("id", "?")),
        action=str(raw.get("action", "?")),
        state=opt("state", str),
        last_activity=float(raw["last_activity"])
        if isinstance(raw.get("last_activity"), int | float)
        else None,
        bytes=opt("bytes", int),
        why=str(raw.get("why") or ""),
    )


class _SweepDriver(StepDriver):
    def __init__(self, store: StepStore, record: StepRecord, days: float, dry_run: bool):
        super().__init__(store, record)
        self.days, self.dry_run = days, dry_run

    def extravars(self) -> dict[str, Any]:
        return {
            **super().extravars(),
            "step_sweep_days": self.days,
            "step_sweep_dry_run": self.dry_run,
        }


def sweep_host(
    host: HostSpec,
    *,
    older_than_days: float,
    dry_run: bool,
    helper: str,
    remote_base: str | None,
    store: StepStore | None = None,
) -> SweepReport:
    """Ask the host's helper to remove (or, dry run, to list) the work dirs under its base
    whose last activity is older than `older_than_days` and whose program does not run."""
    if not (math.isfinite(older_than_days) and older_than_days >= 0):
        raise UsageError(f"--older-than {older_than_days}: give a number of days, 0 or more")
    store = store or StepStore()
    spec = StepSpec(
        host=host, results_dir=Path("."), helper=helper, remote_base=remote_base, name="sweep"
    )
    spec.validate()
    record = StepRecord(
        f"sweep-{uuid.uuid4().hex[:12]}", spec_to_dict(spec), str(uuid.uuid4()), time.time()
    )
    store.step_dir(record.step_id).mkdir(parents=True, mode=0o700)
    store.save(record)
    try:
        done = _SweepDriver(store, record, older_than_days, dry_run).run_tags(["sweep"])
    finally:
        shutil.rmtree(store.step_dir(record.step_id), ignore_errors=True)
    answer = next((d.answer for d in done if d.phase == "sweep"), None)
    if not answer or not isinstance(answer.get("dirs"), list):
        raise RemoteError(
            f"{host.label()} gave no sweep report: its helper may predate the sweep verb "
            "(0.2.0 or older); update it with the ssh_target role"
        )
    return SweepReport(
        host=host.label(),
        base=str(answer.get("base", "")),
        older_than_days=older_than_days,
        dry_run=dry_run,
        dirs=tuple(_dir(d) for d in answer["dirs"] if isinstance(d, dict)),
    )
