"""bench/run_all.py runs every benchmark even after one misses, and says which missed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> object:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_run_all"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_a_miss_does_not_stop_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_all = _load()
    codes = {"ssh_step": 1, "webapi_mode": 0, "mint_compat": 2, "store_scale": 0}
    codes["poller_rounds"] = 0
    calls: list[tuple[str, list[str]]] = []

    def fake(name: str, args: list[str], bench_dir: Path) -> object:
        calls.append((name, list(args)))
        return run_all.Outcome(name, codes[name], 0.0)  # type: ignore[attr-defined]

    monkeypatch.setattr(run_all, "run_one", fake)
    assert run_all.main(["--quick"]) == 1  # type: ignore[attr-defined]
    assert [c[0] for c in calls] == list(codes)
    assert calls[2][1] == ["--size-mib", "16"]
    out = capsys.readouterr().out
    assert "3 of 5 met their targets; missed or failed: ssh_step, mint_compat" in out
    assert "MISSED a target" in out and "FAILED (exit 2)" in out


def test_all_met_exits_0_and_unknown_names_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_all = _load()
    monkeypatch.setattr(
        run_all,
        "run_one",
        lambda name, args, bench_dir: run_all.Outcome(name, 0, 0.0),  # type: ignore[attr-defined]
    )
    assert run_all.main(["--only", "webapi_mode"]) == 0  # type: ignore[attr-defined]
    assert "1 of 1 met their targets" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        run_all.main(["--only", "nope"])  # type: ignore[attr-defined]
    assert info.value.code == 2
