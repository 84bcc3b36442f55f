"""The original ini as server config (merge, live reload, last good copy), import-ini, MInt tokens
imported into users, and the operator commands for stuck legacy claims."""

from __future__ import annotations

import io
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer
from tests.webapi.mint_standin import OriginalWorkflow
from tests.webapi.mintfix import add_mint_users, make_env, write_scripts
from webapi.cli import main
from webapi.errors import BadRequest, ConfigError
from webapi.mint.codec.ids import accept_id_of, calc_id_of
from webapi.mint.ini import parse_ini
from webapi.server.auth import UserStore, token_hash
from webapi.server.config import load_config, parse_config

INI = """[Server]
ipaddress = 0.0.0.0
portnumber = 50443
loglevel = INFO

[RemoteSites]
remote_site_ids = ini-a ini-b

[ini-a]
commands = {commands}

[ini-b]
commands = /opt/mi/bin/run.sh  python3
"""


def _touch_later(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()  # make sure the change is seen even within one mtime tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_parse_ini_and_import_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ini = tmp_path / "mi_distributed_computing_assist.ini"
    ini.write_text(INI.format(commands="a.sh b.sh a.sh"))
    conf = parse_ini(ini.read_text(), ini)
    assert conf.sites == {"ini-a": ("a.sh", "b.sh"), "ini-b": ("/opt/mi/bin/run.sh", "python3")}
    assert (conf.listen, conf.port) == ("0.0.0.0", 50443)
    assert main(["import-ini", str(ini)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["port"] == 50443 and doc["sites"]["ini-b"]["commands"] == [
        "/opt/mi/bin/run.sh",
        "python3",
    ]
    parse_config(doc, tmp_path / "config.yml")  # what it prints is a valid config of ours
    for bad, words in (
        ("[Server]\n", "remote_site_ids"),
        ("nonsense", "not a valid ini"),
        ("[RemoteSites]\nremote_site_ids = x\n[Server]\nportnumber = http\n", "portnumber"),
    ):
        ini.write_text(bad)
        with pytest.raises(ConfigError, match=words):
            parse_ini(bad, ini)
        assert main(["import-ini", str(ini)]) == 2


def test_server_takes_sites_from_the_ini_and_follows_edits(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    commands = write_scripts(tmp_path / "scripts")
    ini = tmp_path / "mi_distributed_computing_assist.ini"
    ini.write_text(INI.format(commands=commands["ok.sh"]))
    server = make_api_server(mint_ini=str(ini))
    tokens = add_mint_users(server)
    wf = OriginalWorkflow(server.url, "ini-a", tokens["mia"], str(server.ca_file))
    assert wf.submit(commands["ok.sh"], {"in.txt": b"x"}, []) is not None
    assert wf.submit(commands["fail.sh"], {"in.txt": b"x"}, []) is None  # not listed yet
    _touch_later(ini, INI.format(commands=f"{commands['ok.sh']} {commands['fail.sh']}"))
    assert wf.submit(commands["fail.sh"], {"in.txt": b"x"}, []) is not None
    # A broken ini: the last good sites stay in force.
    _touch_later(ini, "[RemoteSites]\n")
    assert wf.submit(commands["fail.sh"], {"in.txt": b"x"}, []) is not None
    assert "keeping the last good configuration" in server.log_path.read_text()
    # YAML sites still work next to the ini's.
    assert Api(server, "alice").queued()["state"] == "queued"


def test_merge_keeps_yaml_site_settings(tmp_path: Path) -> None:
    ini = tmp_path / "x.ini"
    ini.write_text(INI.format(commands="a.sh"))
    path = tmp_path / "config.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "data_dir": "d",
                "users_file": "u.yml",
                "mint_ini": "x.ini",
                "legacy_lease": 60,
                "sites": {
                    "ini-a": {"commands": ["sample"], "lease_seconds": 90, "legacy_lease": 0}
                },
            }
        )
    )
    conf = load_config(path)
    assert conf.sites["ini-a"].commands == ("sample", "a.sh")
    assert conf.sites["ini-a"].lease_seconds == 90
    assert conf.site_legacy_lease("ini-a") == 0 and conf.site_legacy_lease("ini-b") == 60


def test_users_add_with_a_mint_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"data_dir": "data", "users_file": "users.yml"}))
    monkeypatch.setenv("EXTCOMP_API_CONFIG", str(config))
    token = secrets.token_hex(32)
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert main(["users", "add", "mia", "--token-stdin"]) == 0
    out = capsys.readouterr().out
    assert token not in out and "stored hashed" in out
    text = (tmp_path / "users.yml").read_text()
    assert token not in text and token_hash(token) in text
    users = UserStore(tmp_path / "users.yml")
    assert users.authenticate(f"Bearer {token}").user == "mia"
    # The same token for a second user, or something that is not a MInt token: refused.
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert main(["users", "add", "ben", "--token-stdin"]) == 1
    assert "already registered" in capsys.readouterr().err
    with pytest.raises(BadRequest, match="64 hexadecimal"):
        users.add_user("ben", token="not-a-token")
    monkeypatch.setattr("sys.stdin", io.StringIO(secrets.token_hex(32) + "\n"))
    assert main(["users", "token", "mia", "--token-stdin"]) == 0
    assert len(users.list_users()[0].tokens) == 2


@pytest.mark.slow
def test_legacy_lease_outlives_the_native_lease_and_admin_commands(
    make_api_server: Callable[..., RunningServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = make_env(make_api_server, tmp_path)  # native lease_seconds 3, reaper every 0.5 s
    wf, poller, api = env.wf(), env.poller(), Api(env.server, "mia")
    aid = wf.submit(env.commands["ok.sh"], {"in.txt": b"x"}, ["out.txt"])
    assert aid is not None
    poller.ignore_next = False
    assert poller.request() == aid and poller.params(aid) is not None
    time.sleep(4)  # longer than the native lease: the original poller never heartbeats
    calc = api.get(str(calc_id_of(aid)))
    assert calc["state"] == "running" and calc["lease"]["poller"] == "mint-poller"
    assert calc["lease"]["expires"] > "2100"
    # The operator's way out of a stuck legacy claim: requeue (by accept_id) or fail.
    monkeypatch.setenv("EXTCOMP_API_CONFIG", str(env.server.config_path))
    assert main(["admin", "requeue", aid]) == 0
    assert api.get(str(calc_id_of(aid)))["state"] == "queued"
    resp = poller.call("POST", "calc-start", json=poller.ids(aid))
    assert resp.status_code == 409  # the old claim is gone
    assert poller.request() == aid  # offered again
    assert main(["admin", "fail", accept_id_of(str(calc_id_of(aid))), "--reason", "stuck"]) == 0
    calc = api.get(str(calc_id_of(aid)))
    assert calc["state"] == "failed" and calc["reason"] == "failed by an admin: stuck"
    assert wf.wait_for(aid, "calc-status", ("abnormal",), 5) == "abnormal"
    res = wf.finish(aid, tmp_path)
    assert res.exit_code == 1 and res.files["out.txt"]["mimetype1"] == "Error"
    assert "stuck" in res.files["out.txt"]["mimetype2"]
    assert main(["admin", "fail", aid, "--reason", "again"]) == 1
    assert "cannot fail" in capsys.readouterr().err
