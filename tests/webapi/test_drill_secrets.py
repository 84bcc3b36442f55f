"""The site's never-return list in WebAPI mode: whatever way the program ends (success,
failure, its time limit, the poller killed and restarted), a matching file never reaches the
workflow side; the other results do."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.webapi.conftest import RunningServer
from tests.webapi.mintfix import make_env
from tests.webapi.test_poller import start_poller, write_config
from webapi.client.client import Client

pytestmark = pytest.mark.drill
NEVER = ["*.secret", "licence"]
# Writes secrets (a file, one in a subdir, a whole dir) and a normal result, then ends as told.
WRITER = [
    sys.executable,
    "-c",
    (
        "import os, sys, time\n"
        "os.makedirs('sub', exist_ok=True); os.makedirs('licence', exist_ok=True)\n"
        "open('licence.secret', 'w').write('KEY')\n"
        "open('sub/db.secret', 'w').write('KEY')\n"
        "open('licence/terms.txt', 'w').write('KEY')\n"
        "open('out.txt', 'w').write('result')\n"
        "end = sys.argv[1]\n"
        "if end == 'sleep': time.sleep(60)\n"
        "sys.exit(3 if end == 'fail' else 0)\n"
    ),
]


def results_of(client: Client, calc_id: str, dest: Path) -> set[str]:
    client.download_results(calc_id, dest)
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}


@pytest.mark.parametrize("end", ["ok", "fail", "timeout", "poller-killed"])
def test_never_return_files_never_leave_the_host(
    make_api_server: Callable[..., RunningServer], tmp_path: Path, end: str
) -> None:
    server = make_api_server(lease_seconds=30)
    config = write_config(
        server, tmp_path, never_return=NEVER, commands={"sample": {"argv": WRITER}}
    )
    log = tmp_path / "poller.log"
    with Client(server.url, server.tokens["alice"], ca_file=server.ca_file) as client:
        arg = {"ok": "ok", "fail": "fail", "timeout": "sleep", "poller-killed": "sleep"}[end]
        calc = client.submit("site-a", "sample", [arg], [], timeout=2 if end == "timeout" else None)
        poller = start_poller(config, log=log)
        try:
            if end == "poller-killed":
                # Killed while the program runs; the program is stopped by a cancel after the
                # restart, and whatever it left is delivered without the secrets.
                deadline = time.monotonic() + 30
                while client.show(calc.id).state != "running":
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                time.sleep(1)
                poller.send_signal(signal.SIGKILL)
                poller.wait(timeout=10)
                poller = start_poller(config, log=log)
                time.sleep(1)
                client.cancel(calc.id)
            final = client.wait(calc.id, timeout=60)
        finally:
            poller.send_signal(signal.SIGTERM)
            poller.wait(timeout=20)
        if end == "poller-killed":
            assert final.state == "cancelled"
            assert not any(r.name.endswith(".secret") for r in final.results)
            return
        assert final.state == ("succeeded" if end == "ok" else "failed"), final
        got = results_of(client, calc.id, tmp_path / "results")
    assert "out.txt" in got
    assert not [n for n in got if n.endswith(".secret") or n.startswith("licence")], got
    assert "withheld" in log.read_text()


def test_the_original_protocol_poller_withholds_them_too(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    env = make_env(make_api_server, tmp_path)
    script = tmp_path / "scripts" / "secret.sh"
    script.write_text("#!/bin/sh\necho KEY > licence.secret\necho ok > out.txt\n")
    script.chmod(0o755)
    conf = env.server.config_path.read_text().replace(
        env.commands["ok.sh"], env.commands["ok.sh"] + "\n    - " + str(script), 1
    )
    env.server.config_path.write_text(conf)
    wf = env.wf()
    aid = wf.submit(str(script), {"in.txt": b"x"}, ["out.txt", "licence.secret"])
    assert aid is not None
    token = tmp_path / "mint.token"
    token.write_text(env.tokens["mia"])
    token.chmod(0o600)
    cfg = write_config(
        env.server, tmp_path, never_return=NEVER, commands={"run": {"argv": [str(script)]}}
    )
    # The allow-list maps the site's command (the script's path) to the program.
    text = cfg.read_text().replace("  run:\n", f"  {script}:\n")
    cfg.write_text(text)
    poller = start_poller(
        cfg,
        "--protocol",
        "mint",
        "mint-a",
        env.server.url,
        "-",
        "--token-file",
        str(token),
        "--poll-interval",
        "0.2",
        "--once",
        log=tmp_path / "poller.log",
    )
    assert poller.wait(timeout=60) == 0
    (tmp_path / "wf").mkdir()
    res = wf.finish(aid, tmp_path / "wf")
    assert res.files["out.txt"]["mimetype1"] != "Error"
    secret = res.files["licence.secret"]
    assert secret["mimetype1"] == "Error" and "withheld" in secret["mimetype2"]
    assert not (tmp_path / "wf" / "licence.secret").exists()
