"""Benchmark WebAPI mode: bulk transfers, poller pickup latency, and claims under many pollers.

Everything runs on 127.0.0.1 over TLS (a self-signed cert, as in tests/webapi/conftest.py), with
each server in its own subprocess (`extcomp-api serve`), so its memory is its own:

  a  upload (PUT input) and download (GET input) of 1 GiB through our API vs a minimal raw
     streaming WSGI app (RAW_APP below) on the same server software (cheroot, same TLS adapter,
     same thread count and timeout); both driven by our client code (`webapi.transport`:
     streamed from/to disk with requests). MiB/s, ratio ours/raw, each server's CPU seconds
     per GiB (all its threads; load on the machine moves it less than wall time), and our
     server's peak RSS growth (VmHWM after the transfers minus VmHWM after a small warm-up).
     For information, a third server: the raw app made durable ("raw+durable": it hashes each
     block inline and fsyncs before answering, the least any upload that is acknowledged as
     stored must do); ours/raw+durable says how much of the gap to raw is that floor. And the
     disk's own durable rate, no network: the same 1 GiB written in 1 MiB blocks and fsynced
     (what `dd conv=fsync` measures), in the same runs, into the same file system. Every
     timed transfer starts after a sync, so no run pays for dirty pages an earlier one left
     (the raw app's 1 GiB is written back to disk only later, during whoever runs next)
  b  pickup latency: a real `extcomp-poller` subprocess idle in its long-poll, a calc with one
     small input; from the client's request that queues it (the last input PUT) to the
     allow-listed program (`date +%s.%N > FILE`) starting; also from the registration
  c  N pollers (threads, a requests.Session each) long-polling, then M calcs queued in a burst
     (8 client threads): claim latency = answer time - max(claim sent, calc created on the
     server), i.e. from the moment a poller was asking and a calc was there; claims per calc id
     are counted (double claims must be 0, none missing)

    .venv/bin/python bench/webapi_mode.py   # full: 1 GiB x5, 30 pickups, 200 pollers/1000 calcs
    .venv/bin/python bench/webapi_mode.py --quick  # 64 MiB x2, 8 pickups, 50 pollers/200 calcs
    .venv/bin/python bench/webapi_mode.py --cases b,c

Prints a table and a one-line summary, writes bench/results/webapi-<timestamp>.json with every
sample and the machine. Exit 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import requests  # noqa: E402
import yaml  # noqa: E402
from _common import Progress, Samples, format_table, machine_info, write_json  # noqa: E402

from tests.fixtures.tls import make_tls  # noqa: E402
from webapi.contract.timefmt import parse_ts  # noqa: E402
from webapi.server.auth import UserStore  # noqa: E402
from webapi.transport import Transport, TransportSettings  # noqa: E402

MIB = 1 << 20
CHUNK = MIB
SITE, STAMP = "bench", "stamp"
TARGET_RATIO = 0.95  # (a) ours >= 0.95x raw MiB/s, upload and download (issue 14)
TARGET_RSS_MIB = 64.0  # (a) server peak RSS growth
TARGET_PICKUP_S = 0.5  # (b) median
TARGET_CLAIM_P99_S = 1.0  # (c)
CLAIM_WAIT = 5  # (c) long-poll seconds: short, so the poller threads end soon after the drain


@dataclass(frozen=True)
class Sizes:
    mib: int
    runs: int
    pickups: int
    pollers: int
    calcs: int
    drain_limit_s: float


FULL = Sizes(mib=1024, runs=5, pickups=30, pollers=200, calcs=1000, drain_limit_s=180)
QUICK = Sizes(mib=64, runs=2, pickups=8, pollers=50, calcs=200, drain_limit_s=40)


# -- the raw baseline server ----------------------------------------------------------------
def raw_app(root: Path, durable: bool = False) -> Callable[..., Iterable[bytes]]:
    """RAW_APP: PUT streams the body to root/<name> in 1 MiB chunks; GET streams it back.
    `durable`: also a sha256 of the body, and an fsync of the file before the answer."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = root / environ["PATH_INFO"].rsplit("/", 1)[-1]
        if environ["REQUEST_METHOD"] == "PUT":
            left, body = int(environ.get("CONTENT_LENGTH") or 0), environ["wsgi.input"]
            digest = hashlib.sha256()
            with path.open("wb") as fh:
                while left > 0 and (chunk := body.read(min(CHUNK, left))):
                    fh.write(chunk)
                    if durable:
                        digest.update(chunk)
                    left -= len(chunk)
                received = fh.tell()
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            start_response("200 OK", [("Content-Type", "application/json")])
            # The upload answer our client checks (webapi.contract.calc.FileAck).
            ack = {"name": path.name, "received": received, "complete": True}
            return [json.dumps(ack).encode()]
        fh = path.open("rb")
        size = str(os.fstat(fh.fileno()).st_size)
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", size)]
        )
        return iter(lambda: fh.read(CHUNK), b"")

    return app


def serve_raw(
    root: Path, cert: Path, key: Path, threads: int, log: Path, durable: bool = False
) -> int:
    """`--raw-server`: cheroot exactly as webapi/serve.py configures it, serving RAW_APP."""
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    server = wsgi.Server(
        ("127.0.0.1", 0),
        raw_app(root, durable),
        numthreads=threads,
        max=threads,
        request_queue_size=max(64, threads),
        timeout=30,
        shutdown_timeout=5,
        server_name="raw",
    )
    server.ssl_adapter = BuiltinSSLAdapter(str(cert), str(key))
    server.prepare()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve, daemon=True).start()
    log.write_text(f"listening on https://127.0.0.1:{server.bind_addr[1]}\n")
    stop.wait()
    server.stop()
    return 0


# -- servers as subprocesses ----------------------------------------------------------------
@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[bytes]

    def status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {key} in /proc/{self.proc.pid}/status")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process, all its threads (less moved by other
        load on the machine than wall time)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def subprocess_server(argv: list[str], log: Path) -> Iterator[Proc]:
    """Start a server, read its URL from its log ("listening on URL"), stop it on the way out."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, url = time.monotonic() + 30, ""
        while not url and time.monotonic() < deadline:
            time.sleep(0.05)
            text = log.read_text() if log.exists() else ""
            if "listening on " in text:
                url = text.split("listening on ", 1)[1].split()[0]
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[1:4]} exited with {proc.returncode}; see {log}")
        if not url:
            raise RuntimeError(f"{argv[1:4]} did not start within 30 s; see {log}")
        yield Proc(url, proc)
    finally:
        stop_proc(proc)


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class Api:
    srv: Proc
    token: str
    ca: Path

    def transport(self, read_timeout: float = 600) -> Transport:
        return Transport(
            TransportSettings(
                url=self.srv.url,
                token=self.token,
                ca_file=self.ca,
                read_timeout=read_timeout,
                retries=0,
            )
        )


@contextmanager
def api_server(base: Path, tls: tuple[Path, Path], **overrides: Any) -> Iterator[Api]:
    """`extcomp-api serve` with one user ("bench") and one site allowing STAMP."""
    base.mkdir(parents=True)
    config = {
        "listen": "127.0.0.1",
        "port": 0,
        "data_dir": str(base / "data"),
        "users_file": str(base / "users.yml"),
        "log_file": str(base / "server.log"),
        "tls": {"cert": str(tls[0]), "key": str(tls[1])},
        "threads": 16,
        "sites": {SITE: {"commands": [STAMP]}},
        **overrides,
    }
    (base / "config.yml").write_text(yaml.safe_dump(config))
    token = UserStore(base / "users.yml").add_user("bench").token
    argv = [sys.executable, "-m", "webapi.cli", "serve", "--config", str(base / "config.yml")]
    with subprocess_server(argv, base / "server.log") as srv:
        yield Api(srv, token, tls[0])


# -- (a) transfers --------------------------------------------------------------------------
def random_file(path: Path, mib: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(mib):
            block = os.urandom(MIB)
            fh.write(block)
            digest.update(block)
    return digest.hexdigest()


def durable_write(src: Path, dest: Path) -> float:
    """Seconds to copy src to dest in CHUNK blocks and fsync it: the disk's durable rate, the
    most any upload acknowledged only once stored can reach here (no TLS, no hash)."""
    started = time.perf_counter()
    with src.open("rb") as fin, dest.open("wb") as fout:
        while block := fin.read(CHUNK):
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
    seconds = time.perf_counter() - started
    dest.unlink()
    return seconds


def register(tr: Transport, inputs: list[dict[str, Any]], args: list[str]) -> dict[str, Any]:
    body = {"site": SITE, "command": STAMP, "args": args, "inputs": inputs}
    _, calc = tr.call("POST", "/api/v1/calcs", json=body)
    assert isinstance(calc, dict)
    return calc


def case_a(tmp: Path, tls: tuple[Path, Path], sizes: Sizes, prog: Progress) -> dict[str, Any]:
    src = tmp / "a-src.bin"
    digest = random_file(src, sizes.mib)
    size = src.stat().st_size
    rates = {
        f"{s} {d}": Samples(f"{s} {d}", "MiB/s")
        for s in ("ours", "raw", "durable")
        for d in ("upload", "download")
    }
    rates["disk write"] = Samples("disk write+fsync", "MiB/s")
    client_cpu = {
        side: Samples(f"{side} upload client CPU", "s/GiB") for side in ("ours", "raw", "durable")
    }
    cpu = {
        f"{s} {d}": Samples(f"{s} {d} server CPU", "s/GiB")
        for s in ("ours", "raw", "durable")
        for d in ("upload", "download")
    }
    rss: dict[str, dict[str, float]] = {}
    threads = 16
    raw_root = tmp / "raw-root"
    raw_root.mkdir()
    raw_argv = [
        sys.executable,
        __file__,
        "--raw-server",
        str(raw_root),
        str(tls[0]),
        str(tls[1]),
        str(threads),
        str(tmp / "raw.log"),
    ]
    durable_root = tmp / "durable-root"
    durable_root.mkdir()
    durable_argv = [*raw_argv[:3], str(durable_root), *raw_argv[4:-1], str(tmp / "durable.log")]
    durable_argv.append("durable")
    with (
        api_server(tmp / "a-srv", tls, threads=threads) as ours,
        subprocess_server(raw_argv, tmp / "raw.log") as raw,
        subprocess_server(durable_argv, tmp / "durable.log") as durable,
    ):
        t_ours, t_raw = ours.transport(), Api(raw, "x", tls[0]).transport()
        t_durable = Api(durable, "x", tls[0]).transport()
        try:
            # Warm-up: a small transfer each way, so imports and first allocations are not
            # counted as growth; idle VmHWM is taken after it.
            small = tmp / "warm.bin"
            warm_digest = random_file(small, 1)
            calc = register(t_ours, [{"name": "w.bin", "size": MIB, "sha256": warm_digest}], [])
            t_ours.upload(f"/api/v1/calcs/{calc['id']}/inputs/w.bin", small)
            t_ours.download(
                f"/api/v1/calcs/{calc['id']}/inputs/w.bin",
                tmp / "w.out",
                size=MIB,
                sha256=warm_digest,
            )
            t_raw.upload("/files/w.bin", small)
            t_raw.download("/files/w.bin", tmp / "w.out", size=MIB, sha256=None)
            t_durable.upload("/files/w.bin", small)
            idle = {"ours": ours.srv.status_kib("VmHWM"), "raw": raw.status_kib("VmHWM")}
            for run in range(sizes.runs):
                # Alternate who goes first, so drift in the machine's load hits both alike.
                order = ("ours", "raw", "durable", "disk")[:: 1 if run % 2 == 0 else -1]
                for side in order:
                    prog.show(f"a: run {run + 1}/{sizes.runs}, {side}")
                    os.sync()
                    if side == "disk":
                        rates["disk write"].add(sizes.mib / durable_write(src, tmp / "disk.bin"))
                        continue
                    if side == "ours":
                        entry = {"name": "in.bin", "size": size, "sha256": digest}
                        path = f"/api/v1/calcs/{register(t_ours, [entry], [])['id']}/inputs/in.bin"
                        tr = t_ours
                    else:
                        path = f"/files/in-{run}.bin"
                        tr = t_raw if side == "raw" else t_durable
                    dest = tmp / "a-dest.bin"
                    proc = {"ours": ours.srv, "raw": raw, "durable": durable}[side]
                    cpu0, start = proc.cpu_seconds(), time.perf_counter()
                    mine = time.process_time()  # the client's CPU: this process, all threads
                    tr.upload(path, src)
                    rates[f"{side} upload"].add(sizes.mib / (time.perf_counter() - start))
                    client_cpu[side].add((time.process_time() - mine) * 1024 / sizes.mib)
                    os.sync()
                    cpu1, start = proc.cpu_seconds(), time.perf_counter()
                    tr.download(path, dest, size=size, sha256=digest)
                    rates[f"{side} download"].add(sizes.mib / (time.perf_counter() - start))
                    cpu2 = proc.cpu_seconds()
                    cpu[f"{side} upload"].add((cpu1 - cpu0) * 1024 / sizes.mib)
                    cpu[f"{side} download"].add((cpu2 - cpu1) * 1024 / sizes.mib)
                    dest.unlink()
            for name, proc in (("ours", ours.srv), ("raw", raw)):
                peak = proc.status_kib("VmHWM")
                rss[name] = {
                    "idle_hwm_mib": idle[name] / 1024,
                    "peak_hwm_mib": peak / 1024,
                    "growth_mib": (peak - idle[name]) / 1024,
                    "rss_after_mib": proc.status_kib("VmRSS") / 1024,
                }
        finally:
            t_ours.close()
            t_raw.close()
            t_durable.close()
    shutil.rmtree(raw_root, ignore_errors=True)
    shutil.rmtree(durable_root, ignore_errors=True)
    src.unlink()
    return {
        "size_mib": sizes.mib,
        "runs": sizes.runs,
        "rates": {k: v.to_dict() for k, v in rates.items()},
        "server_cpu_s_per_gib": {k: v.to_dict() for k, v in cpu.items()},
        "client_upload_cpu_s_per_gib": {k: v.to_dict() for k, v in client_cpu.items()},
        "server_rss": rss,
        "_samples": rates,
        "_cpu": cpu,
        "_client_cpu": client_cpu,
    }


# -- (b) pickup latency ---------------------------------------------------------------------
def case_b(tmp: Path, tls: tuple[Path, Path], sizes: Sizes, prog: Progress) -> dict[str, Any]:
    stamp_prog = tmp / "stamp.sh"
    # `date` rather than Python: the program's own start-up should not count as pickup.
    stamp_prog.write_text('#!/bin/sh\ndate +%s.%N > "$1.tmp" && mv "$1.tmp" "$1"\n')
    stamp_prog.chmod(0o755)
    stamps = tmp / "stamps"
    stamps.mkdir()
    queued = Samples("queued -> program start", "s")
    registered = Samples("registered -> program start", "s")
    payload = os.urandom(1024)
    entry = {"name": "in.txt", "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    (tmp / "in.txt").write_bytes(payload)
    with api_server(tmp / "b-srv", tls, threads=32) as api:
        token_file = tmp / "poller-token"
        token_file.write_text(api.token)
        token_file.chmod(0o600)
        pconf = {
            "site": SITE,
            "url": api.srv.url,
            "token_file": str(token_file),
            "ca_file": str(api.ca),
            "work_base": str(tmp / "p-work"),
            "state_dir": str(tmp / "p-state"),
            "claim_wait": 50,
            "poller_id": "bench-poller",
            "retry": {"count": 3, "interval": 1},
            "commands": {STAMP: {"argv": [str(stamp_prog)], "timeout": 60}},
        }
        (tmp / "poller.yml").write_text(yaml.safe_dump(pconf))
        poller_bin = Path(sys.executable).parent / "extcomp-poller"
        argv = (
            [str(poller_bin)]
            if poller_bin.exists()
            else [sys.executable, "-m", "webapi.poller.cli"]
        )
        plog = (tmp / "poller.log").open("wb")
        poller = subprocess.Popen(
            [*argv, "--config", str(tmp / "poller.yml")], stdout=plog, stderr=plog
        )
        tr = api.transport(read_timeout=30)
        try:
            time.sleep(1.0)  # let the poller start and park in its first long-poll
            for i in range(sizes.pickups):
                prog.show(f"b: pickup {i + 1}/{sizes.pickups}")
                if poller.poll() is not None:
                    raise RuntimeError(f"poller exited with {poller.returncode}; see poller.log")
                stamp = stamps / str(i)
                t_reg = time.time()
                calc = register(tr, [entry], [str(stamp)])
                t_queue = time.time()
                tr.upload(f"/api/v1/calcs/{calc['id']}/inputs/in.txt", tmp / "in.txt")
                deadline = time.monotonic() + 30
                while not stamp.exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"pickup {i}: the program did not start in 30 s")
                    time.sleep(0.002)
                started = float(stamp.read_text())
                queued.add(started - t_queue)
                registered.add(started - t_reg)
                # Wait until the poller has delivered the outcome and is idle again, then a
                # little more so its next claim is parked in the long-poll when we queue.
                while time.monotonic() < deadline:
                    _, doc = tr.call("GET", f"/api/v1/calcs/{calc['id']}")
                    if doc["state"] in ("succeeded", "failed"):
                        break
                    time.sleep(0.05)
                else:
                    raise RuntimeError(f"pickup {i}: calc not finished in 30 s")
                if doc["state"] != "succeeded":
                    raise RuntimeError(f"pickup {i}: calc {doc['state']}: {doc.get('reason')}")
                time.sleep(0.3)
        finally:
            tr.close()
            stop_proc(poller)
            plog.close()
    return {
        "samples": {s.name: s.to_dict() for s in (queued, registered)},
        "_samples": {"queued": queued, "registered": registered},
    }


# -- (c) many pollers -----------------------------------------------------------------------
def claim_threads(pollers: int) -> int:
    """Server threads for `pollers` parked long-polls: each holds a worker thread and the server
    answers claims past threads-8 at once (routes_poller.RESERVED_THREADS), plus the clients'."""
    return pollers + 8 + 32


def case_c(tmp: Path, tls: tuple[Path, Path], sizes: Sizes, prog: Progress) -> dict[str, Any]:
    threads = claim_threads(sizes.pollers)
    with api_server(
        tmp / "c-srv", tls, threads=threads, lease_seconds=3600, claim_wait_max=50
    ) as api:
        out = claim_storm(api, sizes.pollers, sizes.calcs, sizes.drain_limit_s, prog, "c")
    return {**out, "server_threads": threads}


def claim_storm(
    api: Api, n: int, m: int, drain_limit_s: float, prog: Progress, tag: str
) -> dict[str, Any]:
    """`n` long-polling pollers (threads) claim `m` calcs queued in a burst through `api`."""
    lock = threading.Lock()
    claims: list[tuple[str, float, float]] = []  # (calc id, claim sent, answered)
    empty_polls = [0]
    errors: list[str] = []
    done = threading.Event()
    ready = threading.Barrier(n + 1)
    created: dict[str, float] = {}

    url = f"{api.srv.url}/api/v1/sites/{SITE}/claim"
    deadline = time.monotonic() + drain_limit_s

    def session() -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = str(api.ca)
        s.headers["Authorization"] = f"Bearer {api.token}"
        return s

    def poller(idx: int) -> None:
        s = session()
        try:
            s.get(f"{api.srv.url}/healthz", timeout=30)  # TLS handshake before the clock
            ready.wait(timeout=60)
            # Bounded: stops when all calcs are claimed or at the deadline, and each
            # claim waits at most CLAIM_WAIT s, so the loop ends soon after either.
            for _ in range(10 * m):
                if done.is_set() or time.monotonic() > deadline:
                    return
                sent = time.time()
                r = s.post(
                    url,
                    json={"poller": f"p{idx}", "wait": CLAIM_WAIT},
                    timeout=(10, CLAIM_WAIT + 30),
                )
                got = time.time()
                if r.status_code == 204:
                    with lock:
                        empty_polls[0] += 1
                    continue
                if r.status_code != 200:
                    raise RuntimeError(f"claim: HTTP {r.status_code} {r.text[:200]}")
                with lock:
                    claims.append((r.json()["calc"]["id"], sent, got))
                    if len(claims) >= m:
                        done.set()
        except Exception as exc:  # recorded; the run fails below
            with lock:
                errors.append(f"poller {idx}: {exc}")
        finally:
            s.close()

    local = threading.local()

    def queue_one(_i: int) -> None:
        if time.monotonic() > deadline:
            return  # bounded: a server too slow to register them all fails the run below
        if not hasattr(local, "s"):
            local.s = session()
        body = {"site": SITE, "command": STAMP, "args": [], "inputs": []}
        r = local.s.post(f"{api.srv.url}/api/v1/calcs", json=body, timeout=60)
        if r.status_code != 201 or r.json()["state"] != "queued":
            raise RuntimeError(f"register: HTTP {r.status_code} {r.text[:200]}")
        doc = r.json()
        with lock:
            created[doc["id"]] = parse_ts(doc["created"])

    workers = [threading.Thread(target=poller, args=(i,), daemon=True) for i in range(n)]
    for w in workers:
        w.start()
    prog.show(f"{tag}: {n} pollers connecting")
    ready.wait(timeout=60)
    time.sleep(1.5)  # let every poller park in its long-poll before the burst
    prog.show(f"{tag}: queueing {m} calcs")
    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(queue_one, range(m)))
        queue_s = time.monotonic() - t0
        while not done.is_set() and time.monotonic() < deadline and not errors:
            prog.show(f"{tag}: {len(claims)}/{m} claimed")
            done.wait(0.2)
        drain_s = time.monotonic() - t0
    finally:
        done.set()  # the pollers' loops end within CLAIM_WAIT s, also on an error here
        for w in workers:
            w.join(timeout=CLAIM_WAIT + 40)
    per_calc = Counter(cid for cid, _s, _g in claims)
    latency = Samples("claim latency", "s")
    for cid, sent, got in claims:
        latency.add(got - max(sent, created.get(cid, sent)))
    return {
        "pollers": n,
        "calcs": m,
        "claim_wait": CLAIM_WAIT,
        "claims": len(claims),
        "distinct": len(per_calc),
        "double_claims": sum(c - 1 for c in per_calc.values() if c > 1),
        "missing": len(set(created) - set(per_calc)),
        "empty_polls": empty_polls[0],
        "queue_s": round(queue_s, 3),
        "drain_s": round(drain_s, 3),
        "errors": errors[:20],
        "latency": latency.to_dict() if latency.values else None,
        "_samples": latency,
    }


# -- report ---------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: with 20 samples p95 is the 19th)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def report(results: dict[str, Any]) -> tuple[list[list[str]], list[str], bool]:
    rows: list[list[str]] = []
    misses: list[str] = []
    summary: list[str] = []

    def row(
        case: str,
        metric: str,
        s: Samples | None,
        cols: str,
        target: str,
        ok: bool | None,
        value: str = "",
    ) -> None:
        cells = ["", "", "", "", ""]
        if s is not None and s.values:
            digits = 0 if s.higher_is_better else 3  # whole MiB/s; ms for latencies
            stats = {
                "min": s.min,
                "median": s.median,
                "p95": pct(s.values, 95),
                "p99": pct(s.values, 99),
                "max": s.max,
            }
            for i, key in enumerate(("min", "median", "p95", "p99")):
                if key in cols:
                    cells[i] = f"{stats[key]:.{digits}f}"
            cells[4] = str(len(s.values))
        if value:
            cells[1] = value
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        if ok is False:
            misses.append(f"{case} {metric}")
        rows.append([case, metric, s.unit if s else "", *cells, target, verdict])

    if "a" in results:
        a = results["a"]
        r: dict[str, Samples] = a["_samples"]
        for d in ("upload", "download"):
            ratio = r[f"ours {d}"].median / r[f"raw {d}"].median
            a[f"{d}_ratio"] = round(ratio, 3)
            row("a", f"raw {d} {a['size_mib']} MiB", r[f"raw {d}"], "min median", "", None)
            row("a", f"ours {d} {a['size_mib']} MiB", r[f"ours {d}"], "min median", "", None)
            row(
                "a",
                f"ratio ours/raw {d}",
                None,
                "",
                f">= {TARGET_RATIO}x",
                ratio >= TARGET_RATIO,
                f"{ratio:.2f}x",
            )
            summary.append(f"{d} {ratio:.2f}x raw")
        floor = r["ours upload"].median / r["durable upload"].median
        a["upload_ratio_durable"] = round(floor, 3)
        row(
            "a",
            f"raw+durable upload {a['size_mib']} MiB",
            r["durable upload"],
            "min median",
            "",
            None,
        )
        row("a", "ratio ours/raw+durable upload", None, "", "", None, f"{floor:.2f}x")
        summary.append(f"upload {floor:.2f}x raw+durable")
        disk = r["disk write"]
        if disk.values:
            ceiling = r["ours upload"].median / disk.median
            a["upload_ratio_disk"] = round(ceiling, 3)
            row("a", f"disk write+fsync {a['size_mib']} MiB", disk, "min median", "", None)
            row("a", "ratio ours upload/disk write", None, "", "", None, f"{ceiling:.2f}x")
            summary.append(f"upload {ceiling:.2f}x the disk's write+fsync")
        for d in ("upload", "download"):
            for side in ("raw", "durable", "ours"):
                row("a", f"{side} {d} server CPU", a["_cpu"][f"{side} {d}"], "min median", "", None)
        for side in ("raw", "durable", "ours"):
            row("a", f"{side} upload client CPU", a["_client_cpu"][side], "min median", "", None)
        growth = a["server_rss"]["ours"]["growth_mib"]
        row(
            "a",
            "our server peak RSS growth MiB",
            None,
            "",
            f"<= {TARGET_RSS_MIB:.0f}",
            growth <= TARGET_RSS_MIB,
            f"{growth:.1f}",
        )
        row(
            "a",
            "raw server peak RSS growth MiB",
            None,
            "",
            "",
            None,
            f"{a['server_rss']['raw']['growth_mib']:.1f}",
        )
        summary.append(f"RSS +{growth:.0f} MiB")
    if "b" in results:
        b = results["b"]["_samples"]
        q: Samples = b["queued"]
        row(
            "b",
            "pickup: queued -> start",
            q,
            "min median p95",
            f"median < {TARGET_PICKUP_S}",
            q.median < TARGET_PICKUP_S,
        )
        row("b", "pickup: registered -> start", b["registered"], "min median p95", "", None)
        summary.append(f"pickup median {q.median:.3f} s")
    if "c" in results:
        c = results["c"]
        lat: Samples = c["_samples"]
        label = f"{c['pollers']} pollers, {c['calcs']} calcs"
        ok_lat = (
            bool(lat.values)
            and pct(lat.values, 99) < TARGET_CLAIM_P99_S
            and len(lat.values) == c["calcs"]
        )
        row(
            "c",
            f"claim latency ({label})",
            lat,
            "min median p99",
            f"p99 < {TARGET_CLAIM_P99_S}",
            ok_lat,
        )
        row("c", "double claims", None, "", "0", c["double_claims"] == 0, str(c["double_claims"]))
        row("c", "calcs never claimed", None, "", "0", c["missing"] == 0, str(c["missing"]))
        row(
            "c",
            f"queue {c['calcs']} calcs (8 clients) s",
            None,
            "",
            "",
            None,
            f"{c['queue_s']:.2f}",
        )
        row("c", "queue start -> all claimed s", None, "", "", None, f"{c['drain_s']:.2f}")
        if c["errors"]:
            misses.append("c errors: " + "; ".join(c["errors"][:3]))
        p99 = f"{pct(lat.values, 99):.3f}" if lat.values else "n/a"
        summary.append(f"claim p99 {p99} s, {c['double_claims']} double claims")
    return rows, summary, not misses


def main() -> int:
    if sys.argv[1:2] == ["--raw-server"]:
        root, cert, key, threads, log = sys.argv[2:7]
        durable = sys.argv[7:8] == ["durable"]
        return serve_raw(Path(root), Path(cert), Path(key), int(threads), Path(log), durable)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test (<1 min)")
    ap.add_argument("--cases", default="a,b,c", help="comma-separated subset of a,b,c")
    ap.add_argument("--pollers", type=int, default=0, help="case c: pollers (200; quick 50)")
    ap.add_argument("--calcs", type=int, default=0, help="case c: calcs queued (1000; quick 200)")
    args = ap.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or set(cases) - {"a", "b", "c"}:
        ap.error("--cases takes a comma-separated subset of a,b,c")
    sizes = QUICK if args.quick else FULL
    if args.pollers or args.calcs:
        sizes = replace(
            sizes, pollers=args.pollers or sizes.pollers, calcs=args.calcs or sizes.calcs
        )
    machine = machine_info(packages=["requests", "urllib3", "bottle", "cheroot"])

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds the context managers: servers stopped, temp dir gone

    previous = signal.signal(signal.SIGTERM, on_term)
    prog = Progress()
    results: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            tmp = Path(tempfile.mkdtemp(prefix="bench-webapi-"))
            stack.callback(shutil.rmtree, tmp, True)
            tls = make_tls(tmp)
            runners = {"a": case_a, "b": case_b, "c": case_c}
            for case in cases:
                case_dir = tmp / case
                case_dir.mkdir()
                results[case] = runners[case](case_dir, tls, sizes, prog)
                shutil.rmtree(case_dir, ignore_errors=True)
    except KeyboardInterrupt:
        prog.clear()
        print("interrupted; servers stopped and temp files removed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        prog.clear()
    rows, summary, ok = report(results)
    headers = ["case", "metric", "unit", "min", "median", "p95", "p99", "n", "target", "ok"]
    print(
        f"WebAPI mode, {'quick' if args.quick else 'full'} run, TLS on 127.0.0.1, "
        f"{machine['nproc']} cores, load {machine['load_avg_at_start'][0]}"
    )
    print(format_table(headers, rows, left=2))
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"\nsummary: {'all targets met' if ok else 'target MISSED'}: " + "; ".join(summary))
    for res in results.values():
        res.pop("_samples", None)
        res.pop("_cpu", None)
        res.pop("_client_cpu", None)
    path = write_json(
        "webapi",
        {
            "quick": args.quick,
            "cases": cases,
            "sizes": asdict(sizes),
            "results": results,
            "targets": {
                "ratio": TARGET_RATIO,
                "rss_growth_mib": TARGET_RSS_MIB,
                "pickup_median_s": TARGET_PICKUP_S,
                "claim_p99_s": TARGET_CLAIM_P99_S,
            },
            "ok": ok,
            "load_avg_at_end": load_end,
            "machine": machine,
        },
    )
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
