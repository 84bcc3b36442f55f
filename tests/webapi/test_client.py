"""Client Python API and client CLI against the real server: inputs, settings, exit codes."""

from __future__ import annotations

import json
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.webapi.conftest import RunningServer
from tests.webapi.test_e2e import PollerThread, poller_config
from webapi.cli import main as client_main
from webapi.client.client import Client, collect_inputs


@pytest.fixture
def env(api_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(api_server.tokens["alice"] + "\n")
    for key in ("EXTCOMP_API_TOKEN", "EXTCOMP_API_USER", "EXTCOMP_API_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EXTCOMP_API_URL", api_server.url)
    monkeypatch.setenv("EXTCOMP_API_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("EXTCOMP_API_CA", str(api_server.ca_file))
    return token_file


def test_collect_inputs_expands_dirs(tmp_path: Path) -> None:
    (tmp_path / "d" / "s").mkdir(parents=True)
    (tmp_path / "d" / "s" / "x.txt").write_text("x")
    (tmp_path / "d" / "y.txt").write_text("yy")
    (tmp_path / "f.txt").write_text("f")
    got = collect_inputs([tmp_path / "d", tmp_path / "f.txt"])
    assert [(i.name, i.size) for i in got] == [("d/y.txt", 2), ("d/s/x.txt", 1), ("f.txt", 1)]
    with pytest.raises(ValueError, match="both be named"):
        collect_inputs([tmp_path / "f.txt", tmp_path / "f.txt"])
    with pytest.raises(ValueError, match="does not exist"):
        collect_inputs([tmp_path / "nope"])
    (tmp_path / "bad name.txt").write_text("")
    with pytest.raises(ValueError, match="characters outside"):
        collect_inputs([tmp_path / "bad name.txt"])


def test_submit_is_idempotent_with_request_id(api_server: RunningServer, tmp_path: Path) -> None:
    f = tmp_path / "in.txt"
    f.write_text("hello\n")
    with Client(api_server.url, api_server.tokens["alice"], ca_file=api_server.ca_file) as c:
        one = c.submit("site-a", "sample", ["-v"], [f], request_id="req-1")
        two = c.submit("site-a", "sample", ["-v"], [f], request_id="req-1")
        assert one.id == two.id and two.state == "queued"
        assert [i.received for i in two.inputs] == [6]


def test_cli_no_wait_list_show_cancel_json(
    env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = tmp_path / "in.txt"
    f.write_text("data\n")
    argv = [
        "submit",
        "--site",
        "site-a",
        "--command",
        "sample",
        "--input",
        str(f),
        "--no-wait",
        "--json",
        "--",
        "--flag",
        "x y",
    ]
    assert client_main(argv) == 0
    calc = json.loads(capsys.readouterr().out)
    assert calc["args"] == ["--flag", "x y"] and calc["state"] == "queued"
    assert client_main(["calcs", "list", "--json"]) == 0
    assert calc["id"] in [c["id"] for c in json.loads(capsys.readouterr().out)]
    assert client_main(["calcs", "show", calc["id"]]) == 0
    assert "state: queued" in capsys.readouterr().out
    assert client_main(["calcs", "cancel", calc["id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "cancelled"
    assert client_main(["calcs", "show", "c-nonexistent"]) == 1
    assert "c-nonexistent" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--site", "nowhere", "--command", "sample"], 251, "refused: unknown site"),
        (["--site", "site-b", "--command", "fail"], 252, "refused:"),
        (["--site", "site-a", "--command", "sample", "--input", "/nonexistent"], 2, "not exist"),
    ],
)
def test_cli_refusals_and_usage(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    assert client_main(["submit", *argv]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_settings_errors(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    argv = ["submit", "--site", "site-a", "--command", "sample"]
    assert client_main([*argv, "--results", str(tmp_path / "full")]) == 2
    assert "not empty (use --force" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("EXTCOMP_API_URL", dead)
    assert client_main(["calcs", "list", "--retries", "0"]) == 255
    assert "transport failure: cannot reach" in capsys.readouterr().err
    monkeypatch.delenv("EXTCOMP_API_URL")
    assert client_main(["calcs", "list"]) == 2
    assert "give --url or set EXTCOMP_API_URL" in capsys.readouterr().err
    monkeypatch.setenv("EXTCOMP_API_URL", dead)
    monkeypatch.setenv("EXTCOMP_API_TOKEN_FILE", str(tmp_path / "missing"))
    assert client_main(["calcs", "list"]) == 2


def test_cli_login_writes_private_token(
    api_server: RunningServer,
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "cfg" / "token"
    monkeypatch.setenv("EXTCOMP_API_PASSWORD", api_server.passwords["bob"])
    assert client_main(["login", "--user", "bob", "--token-file", str(target)]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    token = target.read_text().strip()
    assert token not in capsys.readouterr().err
    with Client(api_server.url, token, ca_file=api_server.ca_file) as c:
        assert c.list() == []  # bob's own calcs
    monkeypatch.setenv("EXTCOMP_API_PASSWORD", "wrong")
    assert client_main(["login", "--user", "bob", "--token-file", str(target)]) == 254


@pytest.mark.slow
def test_wait_survives_server_restart(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """The server is killed (-9) while the client waits; it comes back on the same port and
    data, the poller finishes the calc, and the same wait() call returns the result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_api_server(subprocess=True, port=port)
    client = Client(
        server.url, server.tokens["alice"], ca_file=server.ca_file, poll_interval=0.2, patience=60
    )
    f = tmp_path / "in.txt"
    f.write_text("a b c\n")
    calc = client.submit("site-a", "sample", [], [f])
    result: dict[str, object] = {}
    waiter = threading.Thread(target=lambda: result.update(c=client.wait(calc.id)), daemon=True)
    waiter.start()
    server.kill()
    again = make_api_server(subprocess=True, base_dir=server.base_dir, port=port)
    poller = PollerThread(poller_config(again, tmp_path)).start()
    waiter.join(60)
    client.close()
    assert poller.join() == 0
    final = result["c"]
    assert getattr(final, "state", None) == "succeeded"


def test_client_imports_without_server_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for n in ('bottle', 'cheroot', 'ansible', 'ansible_runner'): sys.modules[n] = None\n"
        "import webapi.client.client, webapi.client.cli, webapi.transport, webapi.poller.loop\n"
        "from webapi import Client, Poller\n"
        "import argparse\n"
        "p = argparse.ArgumentParser(); webapi.client.cli.add_client_commands(p.add_subparsers())\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


def test_wait_and_fetch_an_existing_calc(
    env: Path, api_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After --no-wait (or Ctrl-C, or a broken link) `calcs wait|fetch ID` finish the job."""
    from tests.webapi.test_e2e import PollerThread, poller_config

    data = tmp_path / "in.txt"
    data.write_text("one two\n")
    argv = ["submit", "--site", "site-a", "--command", "sample", "--input", str(data), "--no-wait"]
    assert client_main(argv) == 0
    out = capsys.readouterr()
    calc_id = out.out.strip()
    assert f"extcomp-api calcs wait {calc_id} --results DIR" in out.err
    assert client_main(["calcs", "fetch", calc_id, "--results", str(tmp_path / "r")]) == 2
    assert f"`extcomp-api calcs wait {calc_id}` waits for it" in capsys.readouterr().err
    poller = PollerThread(poller_config(api_server, tmp_path)).start()
    assert client_main(["calcs", "wait", calc_id, "--results", str(tmp_path / "r")]) == 0
    assert poller.join() == 0
    assert (tmp_path / "r" / "extcomp-stdout.log").exists()
    assert "succeeded" in capsys.readouterr().err
    again = tmp_path / "again"
    assert client_main(["calcs", "fetch", calc_id, "--results", str(again)]) == 0
    assert sorted(p.name for p in again.iterdir()) == sorted(
        p.name for p in (tmp_path / "r").iterdir()
    )
