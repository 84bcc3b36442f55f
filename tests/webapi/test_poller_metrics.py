"""The poller's metrics (--metrics-textfile, --metrics-port) from a real poller process, with
the server's packages and prometheus_client made unimportable, as on an external host."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.sshd import free_port
from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer
from tests.webapi.test_poller import BLOCKED, write_config
from webapi.errors import ConfigError
from webapi.poller.config import parse_config
from webapi.poller.metrics import MetricsOutput

LAUNCHER = (
    "import sys\n"
    f"for name in {(*BLOCKED, 'prometheus_client')!r}: sys.modules[name] = None\n"
    "from webapi.poller.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
# Writes a 6-byte result, then exits 3.
EXIT3 = [sys.executable, "-c", "open('out.txt', 'w').write('result'); raise SystemExit(3)"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(
                sorted((k, v) for k, v in s.labels.items() if k not in ("site", "poller"))
            )
            out[(s.name, labels)] = s.value
    return out


def test_poller_textfile_and_port(api_server: RunningServer, tmp_path: Path) -> None:
    textfile = tmp_path / "textfiles" / "extcomp-poller.prom"
    textfile.parent.mkdir()
    config = write_config(
        api_server,
        tmp_path,
        commands={"sample": {"argv": EXIT3}},
        metrics={"textfile": str(textfile)},  # from the config; the port from the flag
    )
    port = free_port()
    log = tmp_path / "poller.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCHER,
                "--config",
                str(config),
                "--metrics-port",
                str(port),
            ],
            stdout=fh,
            stderr=fh,
            stdin=subprocess.DEVNULL,
        )
    try:
        calc = Api(api_server, "alice").queued({"in.txt": b"hello"})
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                text = requests.get(url, timeout=5).text
            except requests.ConnectionError:
                text = ""
            if "extcomp_poller_calcs_total" in text and "extcomp_poller_result_bytes" in text:
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        found = samples(text)
        ran = (("command", "sample"), ("exit_code", "3"))
        assert found[("extcomp_poller_calcs_total", ran)] == 1
        assert found[("extcomp_poller_input_bytes_total", ())] == 5
        assert found[("extcomp_poller_result_bytes_total", ())] >= 6
        assert found[("extcomp_poller_polls_total", (("outcome", "claimed"),))] == 1
        last = found[("extcomp_poller_last_successful_poll_timestamp_seconds", ())]
        assert abs(last - time.time()) < 600  # a timestamp of this run
        # The textfile says the same (rewritten atomically: never a partial file to parse).
        written = samples(textfile.read_text())
        assert written[("extcomp_poller_calcs_total", ran)] == 1
        assert [p.name for p in textfile.parent.iterdir()] == [textfile.name]
        assert requests.get(url.replace("/metrics", "/"), timeout=5).status_code == 404
        assert calc["id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_metrics_from_the_config_file(tmp_path: Path) -> None:
    base = {"site": "s", "url": "https://h", "token": "t"}
    conf = parse_config({**base, "metrics": {"textfile": "m/p.prom", "port": 0}}, base=tmp_path)
    assert conf.metrics == MetricsOutput(textfile=tmp_path / "m" / "p.prom", port=0)
    for bad, words in (
        ({"port": 70000}, "metrics.port must be a port"),
        ({"textfile": 3}, "metrics.textfile must be a path"),
        ({"file": "x"}, "metrics must be {textfile"),
    ):
        with pytest.raises(ConfigError, match=re.escape(words)):
            parse_config({**base, "metrics": bad})


def test_bad_metrics_flags_are_usage_errors(api_server: RunningServer, tmp_path: Path) -> None:
    config = write_config(api_server, tmp_path)
    for flags, words in (
        (["--metrics-textfile", str(tmp_path / "no" / "x.prom")], "is not a writable dir"),
        (["--metrics-port", "70000"], "give a port 0-65535"),
    ):
        out = subprocess.run(
            [sys.executable, "-c", LAUNCHER, "--config", str(config), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out.stderr
        assert words in out.stderr and "Traceback" not in out.stderr
