"""Store scale: claims and queue listings on a 1,000-calc store against a 100,000-calc one.

Both data dirs are generated directly (a benchmark, not a history): most calcs final with their
files on disk (input, stdout, a result), a fixed number queued, running and registered on other
sites and users, so the two stores differ only in how much history they keep. Then, with both
servers up, alternating small/big run by run:

- claim latency (p50/p99) under N long-polling pollers (bench/webapi_mode.py case c's storm);
- `GET /api/v1/calcs?state=queued` as a user and as an admin (the status page's queue);
- `extcomp-api calcs list --state queued` as a process;
- and, once each, the server's start-up time on the data dir (first open: no index yet);
- then, in this process on the big store after its server stopped (finals.json written): the
  census a first metrics scrape or status page makes, and retention's judging pass (a purge
  dry run), each with the finals index and without it (how both worked before it carried
  site, state and end time), alternating.

Target: the big store within 1.5x of the small one (medians for listings, p99 for claims).

    .venv/bin/python bench/store_scale.py            # 1,000 vs 100,000 calcs, 200 pollers
    .venv/bin/python bench/store_scale.py --quick    # 1,000 vs 10,000, 50 pollers (~1 min)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import requests  # noqa: E402
import yaml  # noqa: E402
from _common import Progress, Samples, format_table, machine_info, write_json  # noqa: E402
from webapi_mode import SITE, STAMP, Api, Proc, claim_storm, claim_threads, pct  # noqa: E402

from tests.fixtures.tls import make_tls  # noqa: E402
from webapi.calcs import Calc, Lease, StateChange  # noqa: E402
from webapi.contract.calc import CalcState, FileEntry  # noqa: E402
from webapi.server.auth import UserStore  # noqa: E402
from webapi.store import finals  # noqa: E402
from webapi.store.census import Census  # noqa: E402
from webapi.store.retention import RetentionRule, purge  # noqa: E402
from webapi.store.yaml_store import YamlJobStore  # noqa: E402

TARGET_RATIO = 1.5
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
OTHER_SITES = ("site-b", "site-c")
USERS = ("bench", "alice", "bob")
# Non-final calcs, the same number in both stores: a store's history grows, its queue does not.
QUEUED, RUNNING, REGISTERED = 60, 20, 10


@dataclass(frozen=True)
class Sizes:
    small: int
    big: int
    pollers: int
    calcs: int  # queued per claim storm
    runs: int  # storms per store, alternating
    lists: int  # listing requests per store and kind, alternating
    cli_runs: int
    drain_limit_s: float
    index_runs: int = 3  # census and purge judging with/without the finals index, alternating


FULL = Sizes(
    small=1000,
    big=100_000,
    pollers=200,
    calcs=1000,
    runs=2,
    lists=15,
    cli_runs=5,
    drain_limit_s=240,
)
QUICK = Sizes(
    small=1000, big=10_000, pollers=50, calcs=200, runs=2, lists=8, cli_runs=3, drain_limit_s=60
)


# -- generating a data dir ------------------------------------------------------------------
def _file(calc_dir: Path, kind: str, name: str, body: bytes) -> FileEntry:
    (calc_dir / kind / name).write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    return FileEntry(name=name, size=len(body), sha256=digest, received=len(body))


def _calc(i: int, n: int, now: float, calc_dir: Path) -> Calc:
    """The i-th of n calcs: the first few non-final on other sites, the rest final, spread over
    sites and users, created over the last 30 days (oldest first)."""
    created = now - 30 * 86400 * (1 - i / n)
    user = USERS[i % len(USERS)]
    site = (SITE, *OTHER_SITES)[i % 3]
    state = (CalcState.SUCCEEDED, CalcState.SUCCEEDED, CalcState.FAILED, CalcState.CANCELLED)[i % 4]
    if i < QUEUED + RUNNING + REGISTERED:  # non-final ones never on the bench's own site
        site = OTHER_SITES[i % 2]
        state = (
            CalcState.QUEUED
            if i < QUEUED
            else CalcState.RUNNING
            if i < QUEUED + RUNNING
            else CalcState.REGISTERED
        )
        created = now - 60 - i
    (calc_dir / "inputs").mkdir(parents=True)
    inputs = (_file(calc_dir, "inputs", "in.dat", f"input {i}\n".encode()),)
    results: tuple[FileEntry, ...] = ()
    if state in (CalcState.SUCCEEDED, CalcState.FAILED):
        (calc_dir / "results").mkdir()
        results = (
            _file(calc_dir, "results", "stdout", f"calc {i} done\n".encode()),
            _file(calc_dir, "results", "out.dat", os.urandom(64)),
        )
    if state is CalcState.REGISTERED:
        inputs = (FileEntry(inputs[0].name, inputs[0].size, inputs[0].sha256, 0),)
        (calc_dir / "inputs" / "in.dat").unlink()
    history = [StateChange("registered", created), StateChange("queued", created + 1)]
    if state is not CalcState.QUEUED:
        history.append(StateChange("running", created + 2, poller="p0"))
    if state.value in ("succeeded", "failed", "cancelled"):
        history.append(StateChange(state.value, created + 60))
    if state is CalcState.REGISTERED:
        history = history[:1]
    lease = Lease(f"l-{i:024x}", "p0", now + 86400) if state is CalcState.RUNNING else None
    return Calc(
        id=f"c-{i:032x}",
        user=user,
        site=site,
        command=STAMP,
        args=("--steps", str(i % 97)),
        state=state,
        created=created,
        updated=history[-1].at,
        attempts=0 if state in (CalcState.QUEUED, CalcState.REGISTERED) else 1,
        exit_code={CalcState.SUCCEEDED: 0, CalcState.FAILED: 3}.get(state),
        reason="exit code 3" if state is CalcState.FAILED else None,
        inputs=inputs,
        results=results,
        results_declared=bool(results),
        lease=lease,
        queued_at=None if state is CalcState.REGISTERED else created + 1,
        history=tuple(history),
    )


def generate(data_dir: Path, n: int, prog: Progress) -> float:
    """Write n calc records (and their files) into data_dir/calcs; return the seconds it took.
    No index is written: the server builds what it needs when it opens the dir."""
    started = time.monotonic()
    now = time.time()
    calcs_dir = data_dir / "calcs"
    calcs_dir.mkdir(parents=True)
    for i in range(n):
        calc_dir = calcs_dir / f"c-{i:032x}"
        calc = _calc(i, n, now, calc_dir)
        text = yaml.dump(calc.to_record(), Dumper=_DUMPER, sort_keys=False)
        (calc_dir / "calc.yaml").write_text(text, encoding="utf-8")
        if i % 2000 == 0:
            prog.show(f"generating {data_dir.parent.name}: {i}/{n}")
    return time.monotonic() - started


# -- servers --------------------------------------------------------------------------------
@dataclass
class Server:
    api: Api
    admin_token: str
    start_s: float
    base: Path


@contextmanager
def server(base: Path, tls: tuple[Path, Path], threads: int) -> Iterator[Server]:
    """`extcomp-api serve` on base/data; its start-up (open, repair, index) timed until it
    listens, with no 30 s limit: a big store may take long, and that is what is measured."""
    config = {
        "listen": "127.0.0.1",
        "port": 0,
        "data_dir": str(base / "data"),
        "users_file": str(base / "users.yml"),
        "log_file": str(base / "server.log"),
        "tls": {"cert": str(tls[0]), "key": str(tls[1])},
        "threads": threads,
        "lease_seconds": 3600,
        "claim_wait_max": 50,
        "sites": {s: {"commands": [STAMP]} for s in (SITE, *OTHER_SITES)},
    }
    (base / "config.yml").write_text(yaml.safe_dump(config))
    tokens = base / "tokens.json"
    if not tokens.exists():  # a restart keeps the users
        users = UserStore(base / "users.yml")
        made = {"bench": users.add_user("bench").token}
        made["ops"] = users.add_user("ops", admin=True).token
        for other in USERS[1:]:
            users.add_user(other)
        tokens.write_text(json.dumps(made))
    token, admin = (json.loads(tokens.read_text())[k] for k in ("bench", "ops"))
    argv = [sys.executable, "-m", "webapi.cli", "serve", "--config", str(base / "config.yml")]
    log = base / "server.log"
    seen = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = ""
        while not url:
            time.sleep(0.02)
            text = log.read_text()[seen:] if log.exists() else ""
            if "listening on " in text:
                url = text.split("listening on ", 1)[1].split()[0]
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}; see {log}")
            if time.monotonic() - started > 3600:
                raise RuntimeError(f"the server did not start within an hour; see {log}")
        start_s = time.monotonic() - started
        yield Server(Api(Proc(url, proc), token, tls[0]), admin, start_s, base)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def session(srv: Server, token: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(srv.api.ca)
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def timed_get(s: requests.Session, url: str, expect: int) -> float:
    t0 = time.perf_counter()
    r = s.get(url, timeout=600)
    seconds = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"GET {url}: HTTP {r.status_code} {r.text[:200]}")
    got = len(r.json()["calcs"])
    if got != expect:
        raise RuntimeError(f"GET {url}: {got} calcs, expected {expect}")
    return seconds


def timed_cli(srv: Server, expect: int) -> float:
    token_file = srv.base / "bench.token"
    token_file.write_text(srv.api.token)
    argv = [
        *(str(Path(sys.executable).parent / "extcomp-api"), "calcs", "list", "--state", "queued"),
        *("--json", "--url", srv.api.srv.url, "--token-file", str(token_file)),
        *("--ca-file", str(srv.api.ca)),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False, timeout=600)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"calcs list: exit {done.returncode}: {done.stderr[-300:]!r}")
    if done.stdout.count(b'"queued"') < expect:
        raise RuntimeError(f"calcs list: fewer than {expect} queued calcs in its output")
    return seconds


# -- the run --------------------------------------------------------------------------------
class _Unindexed:
    """The store as retention saw it before the finals index carried site, state and end
    time: every record read."""

    def __init__(self, store: YamlJobStore) -> None:
        self.store = store
        self.root = store.root
        self.lock = store.lock
        self.read = store.read
        self.calc_dir = store.calc_dir

    def known_finals(self) -> dict[str, finals.Final]:
        return {}


def index_uses(data_dir: Path, runs: int, prog: Progress) -> dict[str, Samples]:
    """First census and a purge's judging pass on `data_dir`, with and without the finals
    index, alternating (who goes first alternates too)."""
    out = {
        f"{what} {how}": Samples(f"{what} {how}")
        for what in ("census", "purge judging")
        for how in ("index", "no index")
    }
    store = YamlJobStore(data_dir)
    keep_all = RetentionRule(keep=10**9)  # judge every final calc, remove none
    try:
        for r in range(runs):
            for how in ("index", "no index") if r % 2 == 0 else ("no index", "index"):
                prog.show(f"census and purge judging, {how} ({r + 1}/{runs})")
                known = store.known_finals if how == "index" else None
                started = time.perf_counter()
                Census(data_dir / "calcs", known).count_by_user()
                out[f"census {how}"].add(time.perf_counter() - started)
                target = store if how == "index" else _Unindexed(store)
                started = time.perf_counter()
                purge(target, lambda _site: keep_all, dry_run=True)
                out[f"purge judging {how}"].add(time.perf_counter() - started)
    finally:
        store.close()
    return out


def run(tmp: Path, sizes: Sizes, prog: Progress) -> dict[str, Any]:
    tls = make_tls(tmp / "tls")
    gen: dict[str, float] = {}
    for label, n in (("small", sizes.small), ("big", sizes.big)):
        gen[label] = generate(tmp / label / "data", n, prog)
    threads = claim_threads(sizes.pollers)
    claims = {k: Samples(f"claim latency {k}") for k in ("small", "big")}
    storms: dict[str, list[dict[str, Any]]] = {"small": [], "big": []}
    lists = {
        (k, who): Samples(f"list queued ({who}) {k}") for k in ("small", "big") for who in USERS[:1]
    }
    lists.update({(k, "admin"): Samples(f"list queued (admin) {k}") for k in ("small", "big")})
    cli = {k: Samples(f"calcs list {k}") for k in ("small", "big")}
    with ExitStack() as stack:
        srv = {}
        for label in ("small", "big"):
            prog.show(f"starting the {label} store's server")
            srv[label] = stack.enter_context(server(tmp / label, tls, threads))
        order = ("small", "big")
        # Queued calcs per user and for an admin, the same in both stores (see _calc).
        mine = sum(1 for i in range(QUEUED) if USERS[i % 3] == "bench")
        for r in range(sizes.runs):
            for label in order if r % 2 == 0 else order[::-1]:
                out = claim_storm(
                    srv[label].api, sizes.pollers, sizes.calcs, sizes.drain_limit_s, prog, label
                )
                samples = out.pop("_samples")
                claims[label].values.extend(samples.values)
                storms[label].append(out)
        for r in range(sizes.lists):
            for label in order if r % 2 == 0 else order[::-1]:
                base = f"{srv[label].api.srv.url}/api/v1/calcs?state=queued"
                with session(srv[label], srv[label].api.token) as s:
                    lists[(label, "bench")].add(timed_get(s, base, mine))
                with session(srv[label], srv[label].admin_token) as s:
                    lists[(label, "admin")].add(timed_get(s, base, QUEUED))
        for r in range(sizes.cli_runs):
            for label in order if r % 2 == 0 else order[::-1]:
                prog.show(f"calcs list on {label} ({r + 1}/{sizes.cli_runs})")
                cli[label].add(timed_cli(srv[label], mine))
        start = {label: srv[label].start_s for label in order}
    # Again after a clean stop: the finals index written then lets the open skip final calcs.
    restart = {}
    for label in ("small", "big"):
        prog.show(f"restarting the {label} store's server")
        with server(tmp / label, tls, threads) as again:
            restart[label] = again.start_s
    uses = index_uses(tmp / "big" / "data", sizes.index_runs, prog)
    return {
        "index_uses": uses,
        "sizes": asdict(sizes),
        "generate_s": {k: round(v, 2) for k, v in gen.items()},
        "start_s": {k: round(v, 3) for k, v in start.items()},
        "restart_s": {k: round(v, 3) for k, v in restart.items()},
        "storms": storms,
        "claims": {k: v for k, v in claims.items()},
        "lists": lists,
        "cli": cli,
    }


def report(res: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    rows: list[list[str]] = []
    misses: list[str] = []

    def row(what: str, small: float, big: float, target: bool) -> None:
        ratio = big / small if small > 0 else float("inf")
        ok = ratio <= TARGET_RATIO
        if target and not ok:
            misses.append(what)
        verdict = ("ok" if ok else "MISS") if target else "-"
        tgt = f"<= {TARGET_RATIO}x" if target else ""
        rows.append([what, f"{small * 1000:.1f} ms", f"{big * 1000:.1f} ms", f"{ratio:.2f}x"])
        rows[-1] += [tgt, verdict]

    claims = res["claims"]
    row("claim p50", pct(claims["small"].values, 50), pct(claims["big"].values, 50), False)
    row("claim p99", pct(claims["small"].values, 99), pct(claims["big"].values, 99), True)
    for who in ("bench", "admin"):
        lists = res["lists"]
        row(
            f"GET ?state=queued ({who})",
            lists[("small", who)].median,
            lists[("big", who)].median,
            True,
        )
    row("calcs list --state queued", res["cli"]["small"].median, res["cli"]["big"].median, True)
    row("server start-up (no index)", res["start_s"]["small"], res["start_s"]["big"], False)
    row("server restart", res["restart_s"]["small"], res["restart_s"]["big"], False)
    for label in ("small", "big"):
        for storm in res["storms"][label]:
            if storm["double_claims"] or storm["missing"] or storm["errors"]:
                misses.append(
                    f"{label} storm: {storm['double_claims']} double, "
                    f"{storm['missing']} missing, errors {storm['errors'][:2]}"
                )
    return rows, misses


def report_index(res: dict[str, Any], big: int) -> list[list[str]]:
    """With the finals index against without it (before), on the big store."""
    rows = []
    for what in ("census", "purge judging"):
        with_index = res["index_uses"][f"{what} index"].median
        without = res["index_uses"][f"{what} no index"].median
        rows.append(
            [
                f"{what}, {big} calcs",
                f"{without * 1000:.0f} ms",
                f"{with_index * 1000:.0f} ms",
                f"{with_index / without:.2f}x",
            ]
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 vs 10,000 calcs, 50 pollers")
    ap.add_argument("--big", type=int, default=0, help="calcs in the big store (100000)")
    ap.add_argument("--pollers", type=int, default=0, help="long-polling pollers (200)")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.big:
        sizes = Sizes(**{**asdict(sizes), "big": args.big})
    if args.pollers:
        sizes = Sizes(**{**asdict(sizes), "pollers": args.pollers})
    info = machine_info()
    prog = Progress()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        res = run(tmp, sizes, prog)
    finally:
        prog.clear()
        shutil.rmtree(tmp, ignore_errors=True)
    rows, misses = report(res)
    headers = ["what", f"{sizes.small} calcs", f"{sizes.big} calcs", "ratio", "target", "ok"]
    print(format_table(headers, rows))
    index_rows = report_index(res, sizes.big)
    index_headers = ["what (medians)", "no index (before)", "finals index", "ratio"]
    print(format_table(index_headers, index_rows))
    load = os.getloadavg()
    summary = (
        f"store scale: {sizes.big} vs {sizes.small} calcs, {sizes.pollers} pollers; "
        f"start-up {res['start_s']['small']:.1f} s vs {res['start_s']['big']:.1f} s, "
        f"restart {res['restart_s']['small']:.1f} s vs {res['restart_s']['big']:.1f} s; "
        f"load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; "
        + ("all targets met" if not misses else f"MISSED: {'; '.join(misses)}")
    )
    print(summary)
    payload = {
        "machine": info,
        "load_end": load,
        "sizes": res["sizes"],
        "generate_s": res["generate_s"],
        "start_s": res["start_s"],
        "restart_s": res["restart_s"],
        "storms": res["storms"],
        "claims": {k: v.to_dict() for k, v in res["claims"].items()},
        "lists": {f"{k[0]}/{k[1]}": v.to_dict() for k, v in res["lists"].items()},
        "cli": {k: v.to_dict() for k, v in res["cli"].items()},
        "table": rows,
        "index_uses": {k: v.to_dict() for k, v in res["index_uses"].items()},
        "index_table": index_rows,
        "summary": summary,
    }
    print(f"JSON: {write_json('store_scale', payload)}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
