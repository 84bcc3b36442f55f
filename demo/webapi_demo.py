"""WebAPI-mode demo: a local API server, a poller and one calc of `sample_program.py`, end to end.

Everything runs on 127.0.0.1 under `var_dir`: the server (`extcomp-api serve`, plain HTTP — put a
TLS proxy or `tls:` in front for real use), a user and token made with `extcomp-api users add`, a
poller whose allow-list maps `sample` to `demo/sample_program.py`, and a client that submits a
small input directory, waits and downloads the results.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SITE = "demo-site"


def _wait_for_url(log: Path, proc: subprocess.Popen[bytes], limit: float = 30) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if "api server listening on " in line:
                    return line.split("listening on ", 1)[1].split()[0]
        if proc.poll() is not None:
            raise RuntimeError(f"the API server exited with code {proc.returncode}; see {log}")
        time.sleep(0.1)
    raise RuntimeError(f"the API server did not start within {limit:g} s; see {log}")


def _stop(proc: subprocess.Popen[bytes] | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        print(f"  {name} did not stop on SIGTERM; killing it")
        proc.kill()
        proc.wait()


def run(var_dir: Path) -> int:
    """Run the demo with all its files under `var_dir`; return 0 on success."""
    from webapi.client.client import Client

    base = (var_dir / "webapi-demo").resolve()
    if base.exists():
        shutil.rmtree(base)
    (base / "server").mkdir(parents=True)
    server_cfg = base / "server" / "config.yml"
    server_cfg.write_text(
        yaml.safe_dump(
            {
                "listen": "127.0.0.1",
                "port": 0,
                "data_dir": str(base / "server" / "data"),
                "users_file": str(base / "server" / "users.yml"),
                "log_file": str(base / "server" / "server.log"),
                "lease_seconds": 60,
                "heartbeat_seconds": 5,
                "claim_wait_max": 5,
                "sites": {SITE: {"commands": ["sample"]}},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXTCOMP_")}
    api = [sys.executable, "-m", "webapi.cli"]
    print("WebAPI demo")
    added = subprocess.run(
        [*api, "users", "add", "demo", "--config", str(server_cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if added.returncode != 0:
        print(f"  could not add the demo user: {added.stderr.strip()}")
        return 1
    token = added.stdout.strip().splitlines()[-1]
    token_file = base / "poller" / "token"
    token_file.parent.mkdir()
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")

    server = poller = None
    try:
        server = subprocess.Popen(
            [*api, "serve", "--config", str(server_cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = _wait_for_url(base / "server" / "server.log", server)
        print(f"  API server at {url} (data in {base / 'server' / 'data'})")

        poller_cfg = base / "poller" / "config.yml"
        poller_cfg.write_text(
            yaml.safe_dump(
                {
                    "site": SITE,
                    "url": url,
                    "token_file": str(token_file),
                    "work_base": str(base / "poller" / "work"),
                    "state_dir": str(base / "poller" / "state"),
                    "claim_wait": 5,
                    "retry": {"count": 3, "interval": 2},
                    "commands": {
                        "sample": {
                            "argv": [sys.executable, str(HERE / "sample_program.py")],
                            "timeout": 300,
                        }
                    },
                }
            )
        )
        with (base / "poller" / "poller.log").open("wb") as poller_log:
            poller = subprocess.Popen(
                [sys.executable, "-m", "webapi.poller.cli", "--config", str(poller_cfg)],
                env=env,
                stdout=poller_log,
                stderr=poller_log,
            )
        print(f"  poller for site {SITE} started (log {base / 'poller' / 'poller.log'})")

        inputs = base / "inputs"
        inputs.mkdir()
        (inputs / "poem.txt").write_text("Roses are red\nViolets are blue\n", encoding="utf-8")
        (inputs / "notes.txt").write_text("one two three four five\n", encoding="utf-8")
        results = base / "results"
        with Client(url, token, poll_interval=0.5) as client:
            result = client.run(
                SITE,
                "sample",
                [],
                [inputs],
                results_dir=results,
                on_status=lambda c: print(f"  {c.id}: {c.state}"),
            )
        if not result.ok:
            print(f"  calc {result.calc.id} {result.calc.state}: {result.calc.reason}")
            return 1
        print(f"  results in {results}:")
        for path in result.files:
            print(f"    {path.relative_to(results)}")
        print("  summary.txt:")
        for line in (results / "summary.txt").read_text(encoding="utf-8").splitlines():
            print(f"    {line}")
        return 0
    except (RuntimeError, OSError) as exc:
        print(f"  demo failed: {exc}")
        return 1
    finally:
        _stop(poller, "poller")
        _stop(server, "API server")


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("var")))
