"""The README's demo (the WebAPI half): a server, a poller and a sample calc, as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_demo_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from demo.webapi_demo import run

    assert run(tmp_path) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "summary.txt" in out
    summary = tmp_path / "webapi-demo" / "results" / "summary.txt"
    assert summary.read_text().splitlines()[-1].split() == ["3", "11", "55", "total"]
