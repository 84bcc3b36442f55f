"""`extcomp-api` server-side subcommands: users, tokens, sites, requeue, exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from webapi.cli import main
from webapi.server.auth import UserStore


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.yml"
    doc = {"data_dir": "data", "users_file": "users.yml", "sites": {"site-a": {"commands": ["x"]}}}
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("EXTCOMP_API_CONFIG", str(path))
    return path


def test_users_lifecycle(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-from-stdin\n"))
    assert main(["users", "add", "alice", "--admin", "--password-stdin"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    users = UserStore(config.parent / "users.yml")
    assert users.authenticate(f"Bearer {token}").admin
    assert users.login("alice", "pw-from-stdin").user == "alice"
    assert main(["users", "token", "alice", "--label", "ci", "--expires-days", "2"]) == 0
    capsys.readouterr()
    assert main(["users", "list", "--json"]) == 0
    [info] = json.loads(capsys.readouterr().out)
    assert [t["label"] for t in info["tokens"]] == ["initial", "login", "ci"]
    assert token not in (config.parent / "users.yml").read_text()
    assert main(["users", "revoke", "alice", info["tokens"][0]["id"]]) == 0
    assert main(["users", "revoke", "alice"]) == 2  # neither id nor --all
    assert main(["users", "revoke", "alice", "--all"]) == 0
    assert main(["users", "revoke", "ghost", "--all"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no user 'ghost'" in err


def test_sites_and_config_errors(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sites", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["commands"] == ["x"]
    config.write_text("sites: [\n")
    assert main(["sites", "list"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and len(err.strip().splitlines()) == 1
    assert main(["--config", str(config.parent / "none.yml"), "sites", "list"]) == 2


def test_admin_requeue_unknown(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "requeue", "c-" + "0" * 32]) == 1
    assert "no calc" in capsys.readouterr().err


def test_users_password(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["users", "add", "bob"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    monkeypatch.setattr("sys.stdin", io.StringIO("new secret\n"))
    assert main(["users", "password", "bob"]) == 0
    out = capsys.readouterr().out
    assert "new secret" not in out and "bob" in out
    users = UserStore(config.parent / "users.yml")
    assert users.login("bob", "new secret").user == "bob"
    assert users.authenticate(f"Bearer {token}").user == "bob"  # tokens stay valid
    assert "new secret" not in (config.parent / "users.yml").read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["users", "password", "bob"]) == 2
    assert "empty password" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    assert main(["users", "password", "ghost"]) == 1
    assert "no user 'ghost'" in capsys.readouterr().err
