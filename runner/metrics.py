"""Write one node-exporter textfile per step (phase times, bytes, exit code), atomically."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from runner.record import StepRecord
from runner.steps import PHASES

log = logging.getLogger(__name__)
ENV = "EXTCOMP_METRICS_TEXTFILE_DIR"

_HELP = {
    "extcomp_ssh_step_phase_seconds": "Seconds a step spent in each phase (all runs summed).",
    "extcomp_ssh_step_bytes": "Bytes a step moved, by direction (push or pull).",
    "extcomp_ssh_step_exit_code": "The step's exit code (the program's own, or extcomp-ssh's).",
    "extcomp_ssh_step_success": "1 when the step's program exited 0, else 0.",
    "extcomp_ssh_step_finished_timestamp_seconds": "When the step ended (epoch seconds).",
}


def textfile_dir() -> Path | None:
    """The node-exporter textfile dir from $EXTCOMP_METRICS_TEXTFILE_DIR (set by the
    --metrics-textfile-dir flag); None: no textfiles."""
    raw = os.environ.get(ENV, "").strip()
    return Path(raw).expanduser() if raw else None


def _label(value: str) -> str:
    """A label value in the text exposition format: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(record: StepRecord, host: str, finished: float) -> str:
    """The textfile of one step, in the Prometheus text exposition format."""
    base = (
        f'step_id="{_label(record.step_id)}",name="{_label(str(record.spec.get("name", "")))}",'
        f'host="{_label(host)}"'
    )
    rows: dict[str, list[str]] = {name: [] for name in _HELP}
    for phase in PHASES:
        if phase in record.seconds:
            rows["extcomp_ssh_step_phase_seconds"].append(
                f'{{{base},phase="{phase}"}} {record.seconds[phase]:g}'
            )
    for direction, count in (("push", record.bytes_pushed), ("pull", record.bytes_pulled)):
        rows["extcomp_ssh_step_bytes"].append(f'{{{base},direction="{direction}"}} {count}')
    if record.exit_code is not None:
        rows["extcomp_ssh_step_exit_code"].append(f"{{{base}}} {record.exit_code}")
        success = int(record.exit_code == 0 and record.outcome == "succeeded")
        rows["extcomp_ssh_step_success"].append(f"{{{base}}} {success}")
    rows["extcomp_ssh_step_finished_timestamp_seconds"].append(f"{{{base}}} {finished:.3f}")
    lines: list[str] = []
    for name, samples in rows.items():
        if samples:
            lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge"]
            lines += [name + sample for sample in samples]
    return "\n".join(lines) + "\n"


def write_step_textfile(record: StepRecord, host: str) -> Path | None:
    """Write `extcomp-ssh-step-<id>.prom` into the textfile dir, if one is set: a temp file
    (a name node-exporter ignores) renamed into place, so a scrape never sees half a file. A
    failure is a warning, never the step's failure."""
    directory = textfile_dir()
    if directory is None:
        return None
    target = directory / f"extcomp-ssh-step-{record.step_id}.prom"
    tmp = directory / f".{target.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(render(record, host, time.time()))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # node-exporter usually runs as another account
        os.replace(tmp, target)
    except OSError as exc:
        log.warning(
            "cannot write the step's metrics textfile in %s (%s): set %s or "
            "--metrics-textfile-dir to a writable dir",
            directory,
            exc.strerror or exc,
            ENV,
        )
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target
