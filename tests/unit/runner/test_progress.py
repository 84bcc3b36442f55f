"""The TTY progress line: drawn only on a terminal, shows rsync's progress during transfers."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from runner.progress import Progress
from runner.steps import Outcome, StepResult


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_tty(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = Progress(tmp_path / "p.json", stream=stream)
    progress.phase("push")
    progress.note("x")
    progress.clear()
    assert stream.getvalue() == ""


def test_bar_follows_the_progress_file(tmp_path: Path) -> None:
    pfile = tmp_path / "p.json"
    pfile.write_text(json.dumps({"bytes": 50 * 2**20, "percent": 50, "rate": "80.00MB/s"}))
    stream = FakeTty()
    progress = Progress(pfile, stream=stream)
    progress.phase("push")
    time.sleep(0.5)
    progress.clear()
    out = stream.getvalue()
    assert "pushing inputs" in out
    assert "[############............]  50% 50.0 MiB 80.00MB/s" in out
    assert out.endswith("\r\033[K"), "the line is cleared before the summary is printed"


def test_summary_is_one_line() -> None:
    result = StepResult(
        "s-1", Outcome.FAILED, 3, 3, Path("/r"), "", 1536, 3 << 20, {"push": 1.5, "wait": 2.0}
    )
    line = result.summary()
    assert "\n" not in line
    assert line == (
        "step s-1: failed, rc=3, pushed 1.5 KiB, pulled 3.0 MiB, push 1.50s wait 2.00s, results /r"
    )
