"""`extcomp-poller` arguments (positional form, --config merge) and `cleanup` of both protocols."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from webapi.errors import ConfigError
from webapi.poller.cli import build_parser, config_from_args, main, resolve_token
from webapi.poller.config import Retry
from webapi.poller.state import CalcRecord, Phase, StateDir


def parse(*argv: str) -> object:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_positional_form_with_token_warns(caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse("site-a", "https://api:50443", "tok", "retry:4,30", "--allow", "sample=/opt/p")
    assert cfg.site == "site-a" and cfg.url == "https://api:50443"  # type: ignore[attr-defined]
    assert cfg.retry == Retry(4, 30.0)  # type: ignore[attr-defined]
    assert cfg.commands["sample"].argv == ("/opt/p",)  # type: ignore[attr-defined]
    assert "shows in `ps`" in caplog.text and "tok" not in caplog.text.replace("token", "")


def test_positional_login_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTCOMP_POLLER_USER", "alice")
    cfg = parse("site-a", "https://api", "login")
    assert cfg.login is not None and cfg.login.user == "alice"  # type: ignore[attr-defined]
    assert cfg.retry == Retry(5, 60.0)  # type: ignore[attr-defined]
    monkeypatch.delenv("EXTCOMP_POLLER_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(ConfigError, match="EXTCOMP_POLLER_PASSWORD"):
        resolve_token(cfg)  # type: ignore[arg-type]


def test_positional_overrides_config_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    data = {
        "site": "x",
        "url": "https://old",
        "token_file": "tok",
        "retry": {"count": 2, "interval": 1},
        "commands": {"sample": ["/bin/prog"]},
    }
    path.write_text(yaml.safe_dump(data))
    cfg = parse("--config", str(path), "site-b", "https://new", "login")
    assert (cfg.site, cfg.url) == ("site-b", "https://new")  # type: ignore[attr-defined]
    assert cfg.retry == Retry(2, 1.0)  # type: ignore[attr-defined]
    assert "sample" in cfg.commands  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["site-a", "https://api"],
        ["site-a", "https://api", "t", "retry:x"],
        ["site-a", "https://api", "t", "--allow", "noequals"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "extcomp-poller:" in err and "Traceback" not in err


def test_cleanup_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "c-old" / "work"
    old.mkdir(parents=True)
    past = time.time() - 40 * 86400
    for p in (old, old.parent):
        os.utime(p, (past, past))
    (tmp_path / "c-new").mkdir()
    assert main(["cleanup", "--work-base", str(tmp_path), "--older-than", "30"]) == 0
    assert "removed 1 work dirs" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c-new"]
    assert main(["cleanup"]) == 2


def test_cleanup_covers_both_protocols(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One state dir, one work base: cleanup prunes old finished records and work dirs of either
    protocol and keeps whatever is unfinished, however old."""
    state_dir, work = tmp_path / "state", tmp_path / "work"
    state = StateDir(state_dir)
    past = time.time() - 40 * 86400
    records = {
        "c-" + "1" * 32: ("native", Phase.DONE),
        "0d9f-old-mint": ("mint", Phase.DROPPED),
        "c-" + "2" * 32: ("native", Phase.RUNNING),
        "77aa-live-mint": ("mint", Phase.EXITED),
    }
    for key, (protocol, phase) in records.items():
        state.save(CalcRecord(key, protocol, "site-a", phase=phase))
        raw = json.loads((state_dir / f"{key}.json").read_text())
        raw["updated"] = past
        (state_dir / f"{key}.json").write_text(json.dumps(raw))
        (work / key / "work").mkdir(parents=True)
        for p in (work / key / "work", work / key):
            os.utime(p, (past, past))
    config = tmp_path / "poller.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "site": "site-a",
                "url": "https://x",
                "token": "t",
                "state_dir": str(state_dir),
                "work_base": str(work),
            }
        )
    )
    assert main(["cleanup", "--config", str(config), "--older-than", "30"]) == 0
    assert "removed 2 work dirs" in capsys.readouterr().out
    kept = {"c-" + "2" * 32, "77aa-live-mint"}
    assert {p.name for p in work.iterdir()} == kept
    assert {p.stem for p in state_dir.glob("*.json")} == kept


def test_the_unit_does_not_restart_a_poller_that_cannot_start_right() -> None:
    """Codes that a restart cannot fix (config, unknown site, token) stop the unit's restarts."""
    from webapi.errors import Exit

    unit = Path(__file__).parents[3] / "roles/poller_host/templates/poller.service.j2"
    [line] = [ln for ln in unit.read_text().splitlines() if ln.startswith("RestartPrevent")]
    codes = {int(c) for c in line.split("=", 1)[1].split()}
    assert codes == {Exit.USAGE, Exit.UNKNOWN_SITE, Exit.REFUSED}
