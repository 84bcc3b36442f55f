"""Poller rounds: calcs through real pollers in rounds, to show whether a round slows down as the
pollers' state dirs and the server's store fill with finished calcs.

One API server, P `extcomp-poller` processes (each its own state dir), R rounds: each round
registers C calcs (no inputs; the program is `true`) and waits until every one has succeeded.
Nothing is cleaned between rounds, so by the last round each poller's state dir holds
(R-1)*C/P finished records and the store (R-1)*C final calcs. Target: the last round within
10 % of the first (flat per round); every calc succeeded exactly once.

Next to each round's wall time it reports what a load spike would distort less: the median
per-calc latency (registered to succeeded, from each calc's own `created`/`updated`), the CPU
seconds the server and the pollers used in the round (per calc), and the load average at the
round's start and end. A round that is slow in wall time but not in CPU per calc was slowed by
the machine, not by the store's history.

    .venv/bin/python bench/poller_rounds.py            # 6 rounds of 1,000 calcs, 4 pollers
    .venv/bin/python bench/poller_rounds.py --quick    # 4 rounds of 100 (~1-2 min)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import requests  # noqa: E402
import yaml  # noqa: E402
from _common import Progress, format_table, machine_info, write_json  # noqa: E402
from webapi_mode import SITE, STAMP, api_server, stop_proc  # noqa: E402

from tests.fixtures.tls import make_tls  # noqa: E402
from webapi.contract.timefmt import parse_ts  # noqa: E402

TARGET_RATIO = 1.10


@dataclass(frozen=True)
class Sizes:
    rounds: int
    calcs: int
    pollers: int
    round_limit_s: float


FULL = Sizes(rounds=6, calcs=1000, pollers=4, round_limit_s=1800)
QUICK = Sizes(rounds=4, calcs=100, pollers=4, round_limit_s=300)


def start_pollers(tmp: Path, url: str, token: str, ca: Path, n: int) -> list[Any]:
    token_file = tmp / "poller-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    poller_bin = Path(sys.executable).parent / "extcomp-poller"
    procs = []
    for i in range(n):
        conf = {
            "site": SITE,
            "url": url,
            "token_file": str(token_file),
            "ca_file": str(ca),
            "work_base": str(tmp / f"work-{i}"),
            "state_dir": str(tmp / f"state-{i}"),
            "claim_wait": 20,
            "poller_id": f"bench-{i}",
            "retry": {"count": 3, "interval": 1},
            "commands": {STAMP: {"argv": [shutil.which("true") or "/bin/true"], "timeout": 60}},
        }
        (tmp / f"poller-{i}.yml").write_text(yaml.safe_dump(conf))
        log = (tmp / f"poller-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [str(poller_bin), "--config", str(tmp / f"poller-{i}.yml")], stdout=log, stderr=log
            )
        )
    return procs


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc), 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(tmp: Path, sizes: Sizes, prog: Progress) -> dict[str, Any]:
    tls = make_tls(tmp / "tls")
    rounds: list[dict[str, Any]] = []
    with api_server(tmp / "srv", tls, threads=32, lease_seconds=600) as api:
        pollers = start_pollers(tmp, api.srv.url, api.token, api.ca, sizes.pollers)
        local = threading.local()

        def session() -> requests.Session:
            if not hasattr(local, "s"):
                s = requests.Session()
                s.trust_env = False
                s.verify = str(api.ca)
                s.headers["Authorization"] = f"Bearer {api.token}"
                local.s = s
            return local.s  # type: ignore[no-any-return]

        def register(_i: int) -> str:
            body = {"site": SITE, "command": STAMP, "args": [], "inputs": []}
            r = session().post(f"{api.srv.url}/api/v1/calcs", json=body, timeout=60)
            if r.status_code != 201:
                raise RuntimeError(f"register: HTTP {r.status_code} {r.text[:200]}")
            return str(r.json()["id"])

        def latency(cid: str) -> tuple[str, float]:
            doc = session().get(f"{api.srv.url}/api/v1/calcs/{cid}", timeout=60).json()
            seconds = parse_ts(doc["updated"]) - parse_ts(doc["created"])
            return f"{doc['state']}/attempts={doc['attempts']}", seconds

        def waiting() -> int:
            n = 0
            for state in ("queued", "running"):
                r = session().get(f"{api.srv.url}/api/v1/calcs?state={state}", timeout=60)
                n += len(r.json()["calcs"])
            return n

        try:
            time.sleep(1.0)  # the pollers start and park in their first long-poll
            for rnd in range(sizes.rounds):
                load_start = os.getloadavg()
                srv_cpu0 = cpu_seconds(api.srv.proc.pid)
                poll_cpu0 = sum(cpu_seconds(p.pid) for p in pollers)
                t0 = time.monotonic()
                with ThreadPoolExecutor(4) as pool:
                    ids = list(pool.map(register, range(sizes.calcs)))
                registered_s = time.monotonic() - t0
                while (left := waiting()) > 0:
                    for p in pollers:
                        if p.poll() is not None:
                            raise RuntimeError(f"a poller exited with {p.returncode}; see {tmp}")
                    if time.monotonic() - t0 > sizes.round_limit_s:
                        raise RuntimeError(f"round {rnd + 1}: {left} calcs left after the limit")
                    prog.show(f"round {rnd + 1}/{sizes.rounds}: {left} calcs left")
                    time.sleep(0.25)
                seconds = time.monotonic() - t0
                load_end = os.getloadavg()
                srv_cpu = cpu_seconds(api.srv.proc.pid) - srv_cpu0
                poll_cpu = sum(cpu_seconds(p.pid) for p in pollers) - poll_cpu0
                ended_at = time.time()
                # Every calc read back (after the round's clock stopped): succeeded, no lease
                # lost, and its own latency from registration to success.
                states: dict[str, int] = {}
                with ThreadPoolExecutor(4) as pool:
                    answers = list(pool.map(latency, ids))
                for key, _lat in answers:
                    states[key] = states.get(key, 0) + 1
                lat = [x for _k, x in answers]
                records = sum(len(os.listdir(tmp / f"state-{i}")) for i in range(sizes.pollers))
                rounds.append(
                    {
                        "round": rnd + 1,
                        "seconds": round(seconds, 2),
                        "register_s": round(registered_s, 2),
                        "calcs_per_s": round(sizes.calcs / seconds, 2),
                        "state_records": records,
                        "states": states,
                        "latency_median_s": round(statistics.median(lat), 3),
                        "latency_p90_s": round(statistics.quantiles(lat, n=10)[-1], 3),
                        "server_cpu_s": round(srv_cpu, 2),
                        "pollers_cpu_s": round(poll_cpu, 2),
                        "server_cpu_ms_per_calc": round(1000 * srv_cpu / sizes.calcs, 2),
                        "pollers_cpu_ms_per_calc": round(1000 * poll_cpu / sizes.calcs, 2),
                        "load_start": load_start,
                        "load": load_end,
                        "ended_at": ended_at,
                    }
                )
                prog.clear()  # one line per round as it ends: a long run shows its trend
                print(f"round {rnd + 1}: {seconds:.1f} s, {records} state records", flush=True)
        finally:
            for p in pollers:
                stop_proc(p)
    return {"sizes": asdict(sizes), "rounds": rounds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 rounds of 100 calcs")
    ap.add_argument("--rounds", type=int, default=0, help="rounds (6; quick 4)")
    ap.add_argument("--calcs", type=int, default=0, help="calcs per round (1000; quick 100)")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = Sizes(**{**asdict(sizes), "rounds": args.rounds})
    if args.calcs:
        sizes = Sizes(**{**asdict(sizes), "calcs": args.calcs})
    info = machine_info()
    prog = Progress()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rounds-"))
    try:
        res = run(tmp, sizes, prog)
    finally:
        prog.clear()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        [
            str(r["round"]),
            f"{r['seconds']:.1f} s",
            f"{r['calcs_per_s']:.1f}",
            f"{r['latency_median_s']:.2f} s",
            f"{r['server_cpu_ms_per_calc']:.1f} ms",
            f"{r['pollers_cpu_ms_per_calc']:.1f} ms",
            str(r["state_records"]),
            " ".join(f"{k}:{v}" for k, v in sorted(r["states"].items())),
            f"{r['load_start'][0]:.2f} -> {r['load'][0]:.2f}",
        ]
        for r in res["rounds"]
    ]
    headers = [
        "round",
        "time",
        "calcs/s",
        "latency p50",
        "server CPU/calc",
        "pollers CPU/calc",
        "state records",
        "states",
        "load (1 min)",
    ]
    print(format_table(headers, rows))
    first, last = res["rounds"][0], res["rounds"][-1]
    ratio = last["seconds"] / first["seconds"]
    cpu_ratio = (last["server_cpu_s"] + last["pollers_cpu_s"]) / max(
        first["server_cpu_s"] + first["pollers_cpu_s"], 1e-9
    )
    bad = [r["round"] for r in res["rounds"] if set(r["states"]) != {"succeeded/attempts=0"}]
    ok = ratio <= TARGET_RATIO and not bad
    summary = (
        f"poller rounds: {sizes.rounds} x {sizes.calcs} calcs, {sizes.pollers} pollers: "
        f"last/first round {ratio:.2f}x (target <= {TARGET_RATIO}x; CPU per round "
        f"{cpu_ratio:.2f}x, load {first['load_start'][0]:.2f} -> {last['load'][0]:.2f})"
        + (f"; rounds with calcs not succeeded once: {bad}" if bad else "")
        + ("; met" if ok else "; MISSED")
    )
    print(summary)
    payload = {
        "machine": info,
        **res,
        "ratio_last_first": ratio,
        "cpu_ratio_last_first": cpu_ratio,
        "summary": summary,
    }
    print(f"JSON: {write_json('poller_rounds', payload)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
