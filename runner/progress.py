"""Show what a step is doing on a TTY: the phase, and a progress bar while rsync moves data."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

_LABELS = {
    "mkdir": "creating the work dir",
    "push": "pushing inputs",
    "start": "starting the entry script",
    "wait": "running on the host",
    "purge": "removing what must never leave the host",
    "pull": "pulling results",
    "clean": "removing the work dir",
    "check": "checking the host",
}
_BAR = 24


class Progress:
    """Redraws one status line on a TTY; silent (no thread, no output) otherwise."""

    def __init__(
        self,
        progress_file: Path | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.progress_file = progress_file
        self._phase = ""
        self._since = time.monotonic()
        self._note = ""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def phase(self, phase: str) -> None:
        with self._lock:
            self._phase, self._since, self._note = phase, time.monotonic(), ""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()

    def note(self, text: str) -> None:
        with self._lock:
            self._note = text
        self._draw()

    def clear(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None
        self._stop.clear()
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            phase, since, note = self._phase, self._since, self._note
        line = f"{_LABELS.get(phase, phase)} {time.monotonic() - since:5.0f}s"
        if phase in ("push", "pull"):
            line += " " + self._bar()
        if note:
            line += f"  [{note}]"
        self.stream.write("\r\033[K" + line[:200])
        self.stream.flush()

    def _bar(self) -> str:
        if self.progress_file is None:
            return ""
        try:
            data = json.loads(self.progress_file.read_text())
        except (OSError, ValueError):
            return ""
        pct = max(0, min(100, int(data.get("percent", 0))))
        filled = _BAR * pct // 100
        mib = int(data.get("bytes", 0)) / 2**20
        bar = "#" * filled + "." * (_BAR - filled)
        return f"[{bar}] {pct:3d}% {mib:,.1f} MiB {data.get('rate', '')}"
