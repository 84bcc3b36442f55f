"""Benchmark: one calc through our server's original-protocol routes vs our native API.

One calc with an N MiB input (default 256) and an N MiB result, both random. The mint side is
driven the way the original clients drive it (add-calcinfo, allow-wait-calc, calc-request,
calc-params, calc-params-complete, calc-start, calc-end, send-results, end-send, calc-status,
get-calc-result; files as base64 inside JSON), with our streaming client code
(`webapi.mint.client`). The native side moves the same files with `webapi.transport` (register,
PUT input, claim, GET input, finish, PUT result, GET result). Each side gets a fresh server
subprocess (TLS on 127.0.0.1), so its peak RSS (VmHWM) growth above idle is its own. The two
sides alternate (mint, native, native, mint, ...: who goes first alternates too), `--runs` times
each, so drift in the machine's load hits both alike; the table shows medians.

    .venv/bin/python bench/mint_compat.py [--size-mib 256] [--runs 3]

Prints a table (median seconds per transfer, mint/native ratio, server RSS growth), a one-line
summary, and writes bench/results/mint_compat-<timestamp>.json (every sample, the machine, the
load average). Exit 1 if a target is missed: total time mint/native <= 1.5x (issue 14), server
RSS growth <= 64 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import yaml  # noqa: E402
from _common import format_table, machine_info, write_json  # noqa: E402

from tests.fixtures.tls import make_tls  # noqa: E402
from webapi.contract.names import sha256_file  # noqa: E402
from webapi.mint.client import MintApi, mint_settings  # noqa: E402
from webapi.mint.codec import bodies  # noqa: E402
from webapi.mint.codec.b64 import FileSink  # noqa: E402
from webapi.mint.codec.bodies import FileField, FilePiece, StreamBody, js  # noqa: E402
from webapi.mint.codec.wire import LOG_NAMES  # noqa: E402
from webapi.server.auth import UserStore  # noqa: E402
from webapi.transport import Transport, TransportSettings  # noqa: E402

RSS_TARGET_MIB = 64
RATIO_TARGET = 1.5  # total transfer time, mint / native (medians)
SITE, COMMAND = "bench", "copy"


@dataclass
class Server:
    url: str
    token: str
    ca: Path
    proc: subprocess.Popen[bytes]

    def hwm_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")


@contextmanager
def server(base: Path, tls: tuple[Path, Path]) -> Iterator[Server]:
    """`extcomp-api serve` in a subprocess with one user and one site."""
    base.mkdir(parents=True)
    config = {
        "listen": "127.0.0.1",
        "port": 0,
        "data_dir": str(base / "data"),
        "users_file": str(base / "users.yml"),
        "log_file": str(base / "server.log"),
        "tls": {"cert": str(tls[0]), "key": str(tls[1])},
        "threads": 16,
        "sites": {SITE: {"commands": [COMMAND]}},
    }
    (base / "config.yml").write_text(yaml.safe_dump(config))
    token = UserStore(base / "users.yml").add_user("bench").token
    argv = [sys.executable, "-m", "webapi.cli", "serve", "--config", str(base / "config.yml")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        url = ""
        while not url and time.monotonic() < deadline:
            time.sleep(0.05)
            text = (base / "server.log").read_text() if (base / "server.log").exists() else ""
            if "listening on " in text:
                url = text.split("listening on ", 1)[1].split()[0]
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {base}/server.log")
        if not url:
            raise RuntimeError("server did not start")
        yield Server(url, token, tls[0], proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (/proc/PID/stat utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Timer:
    """Wall seconds of each transfer, and the CPU seconds the server and this process (the
    client side) spent on it together: on a loaded machine the CPU moves much less than the
    wall time, so it says whether a change saved work or was only luck with the load."""

    def __init__(self, srv: Server) -> None:
        self.pid = srv.proc.pid
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def _cpu(self) -> float:
        own = os.times()
        return cpu_seconds(self.pid) + own.user + own.system

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        cpu, start = self._cpu(), time.perf_counter()
        value = fn()
        self.wall[name] = time.perf_counter() - start
        self.cpu[name] = self._cpu() - cpu
        return value


def sink(name: str, work: Path) -> Callable[..., Any]:
    """Decode the base64 string of file `name` (calc-params or get-calc-result) into work/."""

    def pick(path: tuple[str | int, ...], _objects: object) -> FileSink | None:
        if len(path) >= 2 and path[-2] == name and path[-1] in (0, "content"):
            (work / name).unlink(missing_ok=True)
            return FileSink(work / name, name, sync=True)
        return None

    return pick


def run_mint(srv: Server, src: Path, result: Path, work: Path) -> Timer:
    """One calc the original clients' way; returns seconds per transfer."""
    timed = Timer(srv)
    empty_log = work / "empty.log"
    empty_log.write_bytes(b"")
    settings = mint_settings(srv.url, srv.token, ca_file=srv.ca, read_timeout=600)
    with MintApi(settings) as api:
        binary = ("application/octet-stream;", "charset=binary")
        body = StreamBody(
            bodies.calc_info(
                command=COMMAND,
                site=SITE,
                parameters="",
                files=[FileField("in.bin", FilePiece.of_path(src), *binary)],
                wanted=["out.bin", *LOG_NAMES],
            )
        )
        add = timed("workflow → server: input", lambda: api.call("POST", "add-calcinfo", body=body))
        aid = add["accept_id"]
        api.call("POST", "allow-wait-calc", doc={"accept_id": aid})
        assert api.call("GET", "calc-request", params={"site_id": SITE})["accept_id"] == aid
        ids = {"accept_id": aid, "site_id": SITE}

        params = lambda: api.get_stream("calc-params", ids, sink("in.bin", work))  # noqa: E731
        timed("server → poller: input", params)
        for step in ("calc-params-complete", "calc-start"):
            api.call("POST", step, doc=ids)
        api.call("POST", "calc-end", doc={**ids, "result": "calc end"})
        text = ("text/plain;", "charset=us-ascii")
        fields = [FileField("out.bin", FilePiece.of_path(result), *binary)]
        fields += [FileField(n, FilePiece.of_path(empty_log), *text) for n in LOG_NAMES]
        head = b'{"accept_id": ' + js(aid) + b', "site_id": ' + js(SITE) + b', "result_files": '
        body = StreamBody([head, *bodies.result_files(fields), b"}"])
        timed("poller → server: result", lambda: api.call("POST", "send-results", body=body))
        api.call("POST", "end-send", doc={**ids, "result": "end send"})
        assert (
            api.call("GET", "calc-status", params={"accept_id": aid})["message"]
            == "status:completed"
        )
        timed(
            "server → workflow: result",
            lambda: api.get_stream(
                "get-calc-result", {"accept_id": aid}, sink("out.bin", work), doc={"accept_id": aid}
            ),
        )
    for name, want in (("in.bin", src), ("out.bin", result)):
        if (work / name).stat().st_size != want.stat().st_size:
            raise RuntimeError(f"mint: {name} came back with the wrong size")
    return timed


def run_native(srv: Server, src: Path, result: Path, work: Path) -> Timer:
    """The same calc through /api/v1 with our transport (raw bytes, Range/resume, sha256)."""
    timed = Timer(srv)
    api = Transport(
        TransportSettings(url=srv.url, token=srv.token, ca_file=srv.ca, read_timeout=600)
    )
    try:
        size, digest = src.stat().st_size, sha256_file(src)
        entry = {"name": "in.bin", "size": size, "sha256": digest}
        _, calc = api.call(
            "POST",
            "/api/v1/calcs",
            json={"site": SITE, "command": COMMAND, "args": [], "inputs": [entry]},
        )
        base = f"/api/v1/calcs/{calc['id']}"
        timed("workflow → server: input", lambda: api.upload(f"{base}/inputs/in.bin", src))
        _, claim = api.call(
            "POST", f"/api/v1/sites/{SITE}/claim", json={"poller": "bench", "wait": 10}
        )
        lease = claim["lease"]["id"]
        timed(
            "server → poller: input",
            lambda: api.download(
                f"{base}/inputs/in.bin", work / "in.bin", size=size, sha256=digest
            ),
        )
        rsize, rdigest = result.stat().st_size, sha256_file(result)
        api.call(
            "POST",
            f"{base}/finish",
            json={
                "lease": lease,
                "exit_code": 0,
                "results": [{"name": "out.bin", "size": rsize, "sha256": rdigest}],
            },
        )
        timed(
            "poller → server: result",
            lambda: api.upload(f"{base}/results/out.bin", result, params={"lease": lease}),
        )
        timed(
            "server → workflow: result",
            lambda: api.download(
                f"{base}/results/out.bin", work / "out.bin", size=rsize, sha256=rdigest
            ),
        )
    finally:
        api.close()
    return timed


def random_file(path: Path, mib: int) -> Path:
    with path.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(1 << 20))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size-mib", type=int, default=256, help="input and result size (256)")
    ap.add_argument("--runs", type=int, default=3, help="calcs per side, alternating (3)")
    args = ap.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]
    tmp = Path(tempfile.mkdtemp(prefix="mint-compat-"))
    times: dict[str, list[dict[str, float]]] = {"mint": [], "native": []}
    cpu: dict[str, list[dict[str, float]]] = {"mint": [], "native": []}
    rss: dict[str, list[dict[str, float]]] = {"mint": [], "native": []}
    try:
        tls = make_tls(tmp)
        src = random_file(tmp / "input.bin", args.size_mib)
        result = random_file(tmp / "result.bin", args.size_mib)
        sides = {"mint": run_mint, "native": run_native}
        for run in range(args.runs):
            order = ("mint", "native") if run % 2 == 0 else ("native", "mint")
            for kind in order:
                base = tmp / f"run{run}-{kind}"
                with server(base / "srv", tls) as srv:
                    warm = Transport(TransportSettings(url=srv.url, ca_file=srv.ca))
                    warm.call("GET", "/healthz", auth=False)
                    warm.close()
                    idle = srv.hwm_kib()
                    work = base / "work"
                    work.mkdir()
                    timer = sides[kind](srv, src, result, work)
                    times[kind].append(timer.wall)
                    cpu[kind].append(timer.cpu)
                    peak = srv.hwm_kib()
                    rss[kind].append(
                        {
                            "idle_mib": idle / 1024,
                            "peak_mib": peak / 1024,
                            "growth_mib": (peak - idle) / 1024,
                        }
                    )
                shutil.rmtree(base, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(args.size_mib, times, cpu, rss, load_start)


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(
    size: int,
    times: dict[str, list[dict[str, float]]],
    cpu: dict[str, list[dict[str, float]]],
    rss: dict[str, list[dict[str, float]]],
    load_start: list[float],
) -> int:
    rows = []
    for step in times["mint"][0]:
        m, n = _median(times["mint"], step), _median(times["native"], step)
        rows.append([step, f"{m:.2f}", f"{n:.2f}", f"{m / n:.2f}x"])
    totals = {k: [sum(t.values()) for t in runs] for k, runs in times.items()}
    tm, tn = statistics.median(totals["mint"]), statistics.median(totals["native"])
    ratio = tm / tn
    rows.append(["total transfers", f"{tm:.2f}", f"{tn:.2f}", f"{ratio:.2f}x"])
    load_end = [round(x, 2) for x in os.getloadavg()]
    runs = len(totals["mint"])
    print(
        f"one calc, {size} MiB in + {size} MiB out, server over TLS on 127.0.0.1, "
        f"{runs} runs per side alternating (medians), load {load_start[0]} -> {load_end[0]}"
    )
    print(format_table(["transfer", "mint s", "native s", "mint/native"], rows))
    print()
    cpu_rows = []
    for step in cpu["mint"][0]:
        m, n = _median(cpu["mint"], step), _median(cpu["native"], step)
        cpu_rows.append([step, f"{m:.2f}", f"{n:.2f}", f"{m / n:.2f}x"])
    cpu_totals = {k: statistics.median(sum(t.values()) for t in runs) for k, runs in cpu.items()}
    cm, cn = cpu_totals["mint"], cpu_totals["native"]
    cpu_rows.append(["total transfers", f"{cm:.2f}", f"{cn:.2f}", f"{cm / cn:.2f}x"])
    print("CPU seconds, server + client together (information, no target):")
    print(format_table(["transfer", "mint CPU s", "native CPU s", "mint/native"], cpu_rows))
    print()
    growth = {k: max(r["growth_mib"] for r in v) for k, v in rss.items()}
    print(
        format_table(
            ["server", "idle MiB", "peak MiB", "max growth MiB"],
            [
                [
                    k,
                    f"{_median(v, 'idle_mib'):.0f}",
                    f"{max(r['peak_mib'] for r in v):.0f}",
                    f"{growth[k]:.0f}",
                ]
                for k, v in rss.items()
            ],
        )
    )
    rss_ok = growth["mint"] <= RSS_TARGET_MIB
    ratio_ok = ratio <= RATIO_TARGET
    verdict = "all targets met" if rss_ok and ratio_ok else "target MISSED"
    print(
        f"\nsummary: {verdict}: mint/native {ratio:.2f}x (<= {RATIO_TARGET}x "
        f"{'ok' if ratio_ok else 'MISSED'}); mint server RSS growth {growth['mint']:.0f} MiB "
        f"(<= {RSS_TARGET_MIB} {'ok' if rss_ok else 'MISSED'})"
    )
    path = write_json(
        "mint_compat",
        {
            "size_mib": size,
            "runs": runs,
            "seconds": times,
            "cpu_seconds": cpu,
            "ratio": round(ratio, 3),
            "ratio_target": RATIO_TARGET,
            "server_rss": rss,
            "rss_target_mib": RSS_TARGET_MIB,
            "rss_ok": rss_ok,
            "ratio_ok": ratio_ok,
            "load_avg_start": load_start,
            "load_avg_end": load_end,
            "machine": machine_info(
                packages=["requests", "urllib3", "bottle", "cheroot", "pybase64"]
            ),
        },
    )
    print(f"wrote {path}")
    return 0 if rss_ok and ratio_ok else 1


if __name__ == "__main__":
    sys.exit(main())
