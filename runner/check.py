"""`extcomp-ssh check`: can we connect, are the helper, rsync and the entry script there.

A failed check exits with the code a step would exit with for the same cause (the table in
`extcomp-ssh --help`), so a script can tell a wrong host key from a missing entry script.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from runner.driver import StepDriver
from runner.errors import EXIT_BASE_UNUSABLE, EXIT_MISSING, EXIT_NOT_EXECUTABLE, StepError
from runner.record import StepRecord, StepStore, spec_to_dict
from runner.steps import HostSpec, StepSpec


@dataclass(frozen=True, slots=True)
class CheckReport:
    ok: bool
    lines: tuple[tuple[str, bool, str], ...]
    exit_code: int = 0  # of the first failed check; 0 when all passed


def check_host(
    host: HostSpec,
    *,
    helper: str,
    entry: str,
    remote_base: str | None,
    store: StepStore | None = None,
) -> CheckReport:
    """Can we connect, is the helper there, is rsync there, is the entry script there."""
    store = store or StepStore()
    spec = StepSpec(
        host=host,
        results_dir=Path("."),
        helper=helper,
        entry=entry,
        remote_base=remote_base,
        name="check",
    )
    spec.validate()
    record = StepRecord(
        f"check-{uuid.uuid4().hex[:12]}", spec_to_dict(spec), str(uuid.uuid4()), time.time()
    )
    store.step_dir(record.step_id).mkdir(parents=True, mode=0o700)
    store.save(record)
    driver = StepDriver(store, record)
    lines: list[tuple[str, bool, str]] = []
    started = time.monotonic()
    try:
        done = driver.run_tags(["check"])
    except StepError as exc:
        connected = record.connected or exc.exit_code in (127, 254)
        lines.append(("connect", connected, host.label() if connected else exc.reason))
        if connected:
            lines.append(("helper", False, exc.reason))
        return CheckReport(False, tuple(lines), exc.exit_code)
    finally:
        shutil.rmtree(store.step_dir(record.step_id), ignore_errors=True)
    info = next((d.answer for d in done if d.phase == "check"), {})
    lines.append(("connect", True, f"{host.label()} ({time.monotonic() - started:.2f} s)"))
    lines.append(
        (
            "helper",
            True,
            f"extcomp-remote {info.get('version')} "
            f"(python {info.get('python')}{', gated' if info.get('gated') else ''})",
        )
    )
    lines.append(("rsync", bool(info.get("rsync")), info.get("rsync_version") or "not found"))
    entry_ok = bool(info.get("entry_executable"))
    entry_note = "" if entry_ok else (" not executable" if info.get("entry_exists") else " missing")
    entry_code = EXIT_NOT_EXECUTABLE if info.get("entry_exists") else EXIT_MISSING
    lines.append(("entry", entry_ok, f"{info.get('entry')}{entry_note}"))
    lines.append(
        (
            "base",
            bool(info.get("base_writable")),
            f"{info.get('base')} ({(info.get('base_free_bytes') or 0) / 2**30:.1f} GiB free)",
        )
    )
    codes = {"rsync": EXIT_MISSING, "entry": entry_code, "base": EXIT_BASE_UNUSABLE}
    failed = [codes[name] for name, ok, _ in lines if not ok]
    return CheckReport(not failed, tuple(lines), failed[0] if failed else 0)
