"""Helpers shared by the benchmarks: samples and their statistics, tables, progress, JSON output.

Nothing here knows about SSH or the WebAPI, so every benchmark (bench/ssh_step.py, a later WebAPI
one) reports the same way: a plain-text table on stdout, a progress line on stderr when it is a
TTY, and one JSON file per run in bench/results/ (git-ignored) carrying the machine's description,
since a number means little without the machine it was measured on.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


@dataclass
class Samples:
    """Repeated measurements of one quantity (seconds, or MiB/s when `unit` says so)."""

    name: str
    unit: str = "s"
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def best(self) -> float:
        """The best sample: the lowest time, or the highest rate (the least disturbed run)."""
        return self.max if self.higher_is_better else self.min

    @property
    def higher_is_better(self) -> bool:
        return self.unit.endswith("/s")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "values": [round(v, 4) for v in self.values],
            "min": round(self.min, 4),
            "median": round(self.median, 4),
            "max": round(self.max, 4),
            "stdev": round(statistics.stdev(self.values), 4) if len(self.values) > 1 else 0.0,
        }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A plain-text table: the first `left` columns (labels) left-aligned, numbers right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        out = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


class Progress:
    """One rewritten status line on stderr, only when stderr is a terminal (never in logs/CI)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._width = 0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        pad = max(0, self._width - len(text))
        sys.stderr.write("\r" + text + " " * pad)
        sys.stderr.flush()
        self._width = len(text)

    def clear(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0


def _first_line(argv: Sequence[str]) -> str | None:
    """First line of a tool's version output (stdout or stderr: ssh -V writes to stderr)."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info(
    tools: dict[str, Sequence[str]] | None = None, packages: Sequence[str] = ()
) -> dict[str, Any]:
    """What the numbers were measured on: cores, CPU, kernel, Python, and given tools/packages."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cpu_flags_aes": "aes" in _cpu_flags(),
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for name in packages:
        info[name] = _dist_version(name)
    for name, argv in (tools or {}).items():
        info[name] = _first_line(argv)
    return info


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _os_release() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return platform.system()
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return match.group(1) if match else platform.system()


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def write_json(name: str, payload: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Write `<results_dir>/<name>-<timestamp>.json` and return its path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}-{timestamp()}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def fmt_value(value: float, unit: str) -> str:
    """Seconds with 2 decimals, rates as whole numbers: the precision the noise allows."""
    return f"{value:.0f}" if unit.endswith("/s") else f"{value:.2f}"
