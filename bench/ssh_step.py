"""Benchmark one SSH-mode step as users run it: `extcomp-ssh run` against a hand-written script.

In one run against a private sshd on 127.0.0.1 (tests/fixtures/sshd.py) it measures, alternating
ours and bench/baseline_ssh_step.sh run by run (who goes first alternates too):

  a  an empty step (no inputs, the entry script does nothing), each side cold (no ssh connection
     up); ours also in this process through run_step (no start-up counted), for the breakdown
  b  256 MiB in, the program writes 256 MiB (`write out.bin 256`) and computes 1 s (`sleep 1`)
  c  1 GiB in, the program copies it to out.bin, which is pulled back: push/pull MiB/s

Both sides run as processes, the way a MInt module script calls them: ours is the `extcomp-ssh`
console script of this venv (gated key, `run ... --json`), the baseline a bash script. Each is
timed from fork to exit (wall) and by its CPU (user + sys of the process and every child it
waited for, from os.wait4). The inputs are excluded from the pull on both sides (`--exclude
in.bin`), so "out" is what the program made. Every run is checked (exit code 0, out.bin of the
right size came back) so a fast failure never counts.

    .venv/bin/python bench/ssh_step.py             # full: 5 runs per case and side (~5 minutes)
    .venv/bin/python bench/ssh_step.py --quick     # small sizes, 2 runs: a smoke test
    .venv/bin/python bench/ssh_step.py --runs 9 --cases a,b

Prints a table (min/median per case, ratio ours/baseline of the medians against the targets) and
writes JSON to bench/results/ssh_step-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import (  # noqa: E402  (needs the sys.path line above when run as a script)
    REPO_ROOT,
    Progress,
    Samples,
    fmt_value,
    format_table,
    machine_info,
    write_json,
)

from runner import execute  # noqa: E402
from runner.driver import run_step  # noqa: E402
from runner.steps import HostSpec, StepSpec  # noqa: E402
from tests.fixtures.sshd import SshHost, start_sshd, stop_sshd  # noqa: E402

BASELINE = REPO_ROOT / "bench" / "baseline_ssh_step.sh"
ENTRY = "test_entry.sh"
MIB = 1 << 20

# Targets (issue 14, docs/performance.md), ours/baseline medians of whole processes: (a) wall
# <= 1.0x, (b) wall <= 0.9x, (c) >= 0.95x the throughput of the hand-written baseline.
TARGET_A_RATIO = 1.0
TARGET_B_RATIO = 0.9
TARGET_C_RATIO = 0.95
CLI = Path(sys.executable).parent / "extcomp-ssh"


@dataclass(frozen=True)
class Sizes:
    b_in_mib: int
    b_out_mib: int
    b_sleep_s: float
    c_mib: int


FULL = Sizes(b_in_mib=256, b_out_mib=256, b_sleep_s=1.0, c_mib=1024)
QUICK = Sizes(b_in_mib=16, b_out_mib=16, b_sleep_s=0.2, c_mib=64)


@dataclass
class Run:
    """One timed step: wall seconds, CPU seconds (None in-process) and its push/pull seconds."""

    total: float
    cpu: float | None = None
    push: float = 0.0
    pull: float = 0.0


@dataclass(frozen=True)
class Finished:
    """A child process that ended: exit code, wall and CPU seconds, what it printed."""

    rc: int
    wall: float
    cpu: float
    stdout: str
    stderr: str


def run_process(argv: list[str], env: dict[str, str] | None = None) -> Finished:
    """Run argv to its end; CPU is user + sys of it and of every child it waited for."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return Finished(
            proc.returncode,
            wall,
            usage.ru_utime + usage.ru_stime,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


@dataclass
class Bench:
    host: SshHost
    work: Path
    progress: Progress
    samples: dict[tuple[str, str], dict[str, Samples]] = field(default_factory=dict)

    def record(self, case: str, variant: str, metric: str, value: float, unit: str = "s") -> None:
        per = self.samples.setdefault((case, variant), {})
        per.setdefault(metric, Samples(f"{case}/{variant}/{metric}", unit)).add(value)

    # ---- the two contenders ---------------------------------------------------------------

    def host_spec(self, gated: bool) -> HostSpec:
        key = self.host.gated_key if gated else self.host.key
        return HostSpec.parse(self.host.target, key=key, known_hosts=self.host.known_hosts)

    def close_master(self, gated: bool) -> None:
        """Drop the runner's ControlMaster so the next step pays its own ssh handshake."""
        path = execute.control_path(self.host_spec(gated))
        if path.exists():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={path}", "-O", "exit", "extcomp-bench"],
                capture_output=True,
                check=False,
                timeout=30,
            )

    def ours_cli(
        self, inputs: tuple[Path, ...], args: tuple[str, ...], *, out_mib: int | None = None
    ) -> Run:
        """`extcomp-ssh run` as a process, through the gated key, with a cold connection."""
        self.close_master(True)
        results = self.work / f"cli-{uuid.uuid4().hex[:8]}"
        argv = [
            str(CLI),
            "run",
            "--host",
            self.host.target,
            "--key",
            str(self.host.gated_key),
            "--known-hosts",
            str(self.host.known_hosts),
            "--helper",
            self.host.helper,
            "--entry",
            ENTRY,
            "--results",
            str(results),
            "--name",
            "bench",
            "--json",
        ]
        for path in inputs:
            argv += ["--input", str(path), "--exclude", path.name]
        done = run_process([*argv, "--", *args] if args else argv)
        if done.rc != 0:
            raise RuntimeError(f"extcomp-ssh run failed (rc {done.rc}): {done.stderr.strip()}")
        seconds = json.loads(done.stdout)["seconds"]
        check_output(results, out_mib)
        shutil.rmtree(results)
        return Run(done.wall, done.cpu, seconds.get("push", 0.0), seconds.get("pull", 0.0))

    def ours(
        self,
        inputs: tuple[Path, ...],
        args: tuple[str, ...],
        *,
        gated: bool = True,
        cold: bool = True,
        out_mib: int | None = None,
    ) -> Run:
        """run_step in this process (no interpreter or import start-up counted)."""
        if cold:
            self.close_master(gated)
        results = self.work / f"ours-{uuid.uuid4().hex[:8]}"
        spec = StepSpec(
            host=self.host_spec(gated),
            results_dir=results,
            inputs=inputs,
            args=args,
            entry=ENTRY,
            helper=self.host.helper,
            # Through the gate the base is forced by authorized_keys; a --base would be refused.
            remote_base=None if gated else str(self.host.base),
            exclude=tuple(p.name for p in inputs),
            name="bench",
        )
        started = time.monotonic()
        result = run_step(spec)
        total = time.monotonic() - started
        if result.exit_code != 0:
            raise RuntimeError(f"our step failed: {result.summary()}")
        check_output(results, out_mib)
        shutil.rmtree(results)
        return Run(total, None, result.seconds.get("push", 0.0), result.seconds.get("pull", 0.0))

    def baseline(
        self, inputs: tuple[Path, ...], args: tuple[str, ...], *, out_mib: int | None = None
    ) -> Run:
        results = self.work / f"base-{uuid.uuid4().hex[:8]}"
        remote = self.host.base / f"baseline-{uuid.uuid4()}"
        argv = [
            str(BASELINE),
            "-p",
            str(self.host.port),
            "-i",
            str(self.host.key),
            "-k",
            str(self.host.known_hosts),
            "-d",
            str(remote),
            "-e",
            str(self.host.site_dir / ENTRY),
            "-o",
            str(results),
        ]
        for path in inputs:
            argv += ["-x", path.name]
        argv += [f"{self.host.user}@{self.host.host}", *map(str, inputs), "--", *args]
        done = run_process(argv)
        if done.rc != 0:
            raise RuntimeError(f"baseline failed (rc {done.rc}): {done.stderr.strip()}")
        phases: dict[str, float] = {}
        for line in done.stdout.splitlines():
            name, start, end = line.split()
            phases[name] = float(end) - float(start)
        check_output(results, out_mib)
        shutil.rmtree(results)
        return Run(done.wall, done.cpu, phases.get("push", 0.0), phases.get("pull", 0.0))


def check_output(results: Path, out_mib: int | None) -> None:
    """A run counts only if the program's output came back whole."""
    if out_mib is None:
        if not results.is_dir():
            raise RuntimeError(f"no results dir {results}")
        return
    out = results / "out.bin"
    if not out.is_file() or out.stat().st_size != out_mib * MIB:
        raise RuntimeError(f"{out} missing or not {out_mib} MiB")


def make_input(path: Path, mib: int) -> Path:
    """Random bytes: nothing along the way (compression, sparse files) can shortcut them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(MIB))
    return path


def interleaved(runs: int) -> Iterator[tuple[int, bool]]:
    """(run index, ours first?): alternate who goes first so drift hits both sides alike."""
    for i in range(runs):
        yield i, i % 2 == 0


# ---- the cases ------------------------------------------------------------------------------

CASE_LABELS = {
    "a": "a empty step",
    "b": "b {b_in}/{b_out} MiB in/out, {sleep:g} s compute",
    "c": "c {c} MiB push/pull",
}


def record_run(bench: Bench, case: str, variant: str, run: Run) -> None:
    bench.record(case, variant, "wall", run.total)
    if run.cpu is not None:
        bench.record(case, variant, "cpu", run.cpu)


def case_a(bench: Bench, runs: int) -> None:
    for i, ours_first in interleaved(runs):
        for who in ["ours", "base"] if ours_first else ["base", "ours"]:
            bench.progress.show(f"a empty step: run {i + 1}/{runs} {who}")
            if who == "base":
                record_run(bench, "a", "baseline", bench.baseline((), ()))
            else:
                record_run(bench, "a", "ours", bench.ours_cli((), ()))
                # The same step without the process start-up, for the breakdown (no target).
                record_run(bench, "a", "ours in-process", bench.ours((), ()))


def case_b(bench: Bench, runs: int, sizes: Sizes) -> None:
    inp = make_input(bench.work / "in-b" / "in.bin", sizes.b_in_mib)
    args = ("write", "out.bin", str(sizes.b_out_mib), "sleep", f"{sizes.b_sleep_s:g}")
    for i, ours_first in interleaved(runs):
        for who in ["ours", "base"] if ours_first else ["base", "ours"]:
            bench.progress.show(f"b data step: run {i + 1}/{runs} {who}")
            if who == "base":
                run, variant = bench.baseline((inp,), args, out_mib=sizes.b_out_mib), "baseline"
            else:
                run, variant = bench.ours_cli((inp,), args, out_mib=sizes.b_out_mib), "ours"
            record_run(bench, "b", variant, run)
            bench.record("b", variant, "push", run.push)
            bench.record("b", variant, "pull", run.pull)
    inp.unlink()


def case_c(bench: Bench, runs: int, sizes: Sizes) -> None:
    inp = make_input(bench.work / "in-c" / "in.bin", sizes.c_mib)
    args = ("copy", "in.bin", "out.bin")
    for i, ours_first in interleaved(runs):
        for who in ["ours", "base"] if ours_first else ["base", "ours"]:
            bench.progress.show(f"c {sizes.c_mib} MiB: run {i + 1}/{runs} {who}")
            if who == "base":
                run, variant = bench.baseline((inp,), args, out_mib=sizes.c_mib), "baseline"
            else:
                run, variant = bench.ours_cli((inp,), args, out_mib=sizes.c_mib), "ours"
            bench.record("c", variant, "push", sizes.c_mib / run.push, "MiB/s")
            bench.record("c", variant, "pull", sizes.c_mib / run.pull, "MiB/s")
            both = 2 * sizes.c_mib / (run.push + run.pull)
            bench.record("c", variant, "push+pull", both, "MiB/s")
            record_run(bench, "c", variant, run)
    inp.unlink()


# ---- report ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    case: str
    metric: str
    text: str
    ok: bool
    value: float


def compare(bench: Bench) -> list[Verdict]:
    """Each target, from medians: (a), (b) wall ratio (CPU ratio shown, no target), (c) rate."""
    verdicts: list[Verdict] = []
    s = bench.samples
    for case, target in (("a", TARGET_A_RATIO), ("b", TARGET_B_RATIO)):
        if (case, "baseline") not in s:
            continue
        base, ours = s[case, "baseline"], s[case, "ours"]
        ratio = ours["wall"].median / base["wall"].median
        verdicts.append(
            Verdict(case, "wall", f"{ratio:.2f}x (<= {target:.2f}x)", ratio <= target, ratio)
        )
        cpu = ours["cpu"].median / base["cpu"].median
        verdicts.append(Verdict(case, "cpu", f"{cpu:.2f}x", True, cpu))
    if ("c", "baseline") in s:
        for metric in ("push", "pull", "push+pull"):
            ratio = s["c", "ours"][metric].median / s["c", "baseline"][metric].median
            verdicts.append(
                Verdict(
                    "c",
                    metric,
                    f"{ratio:.2f}x (>= {TARGET_C_RATIO:.2f}x)",
                    ratio >= TARGET_C_RATIO,
                    ratio,
                )
            )
    return verdicts


def table(bench: Bench, sizes: Sizes, verdicts: list[Verdict]) -> str:
    labels = {
        k: v.format(
            b_in=sizes.b_in_mib, b_out=sizes.b_out_mib, sleep=sizes.b_sleep_s, c=sizes.c_mib
        )
        for k, v in CASE_LABELS.items()
    }
    by_key = {(v.case, v.metric): v for v in verdicts}
    rows: list[list[str]] = []
    for (case, variant), metrics in bench.samples.items():
        for metric, sm in metrics.items():
            verdict = by_key.get((case, metric)) if variant == "ours" else None
            rows.append(
                [
                    labels[case],
                    variant,
                    metric,
                    sm.unit,
                    str(len(sm.values)),
                    fmt_value(sm.min, sm.unit),
                    fmt_value(sm.median, sm.unit),
                    verdict.text if verdict else "",
                    _mark(verdict),
                ]
            )
    # Baseline first within a case/metric, so each "ours" row sits under what it is compared to.
    order = {"baseline": 0}
    rank = {"wall": 0, "cpu": 1}
    rows.sort(key=lambda r: (r[0], rank.get(r[2], 2), r[2], order.get(r[1], 1), r[1]))
    headers = ["case", "variant", "metric", "unit", "n", "min", "median", "vs baseline", "target"]
    return format_table(headers, rows, left=3)


def _mark(verdict: Verdict | None) -> str:
    if verdict is None or verdict.text.endswith("x"):  # no verdict, or a ratio without target
        return ""
    return "ok" if verdict.ok else "MISSED"


def summary_line(verdicts: list[Verdict], json_path: Path | None) -> str:
    parts = []
    for v in verdicts:
        label = f"{v.case} {v.metric}"
        parts.append(f"{label} {v.text.split(' (')[0]}{'' if v.ok else ' MISSED'}")
    ok = all(v.ok for v in verdicts)
    where = f"; JSON {json_path}" if json_path else ""
    return f"ssh_step: {'all targets met' if ok else 'TARGET MISSED'}: {', '.join(parts)}{where}"


# ---- main -----------------------------------------------------------------------------------


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM takes the same clean-up path as Ctrl-C (stop sshd, remove the temp dir)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=None, help="runs per case and side (default 5)")
    p.add_argument("--quick", action="store_true", help="small sizes, 2 runs: a smoke test")
    p.add_argument("--cases", default="a,b,c", help="comma-separated subset of a,b,c")
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not set(args.cases) <= {"a", "b", "c"}:
        p.error("--cases takes a, b and/or c")
    args.runs = args.runs or (2 if args.quick else 5)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not CLI.is_file():
        print(
            f"ssh_step: {CLI} not found: run with the venv's python (.venv/bin/python, after "
            "make setup)",
            file=sys.stderr,
        )
        return 2
    sizes = QUICK if args.quick else FULL
    progress = Progress()
    info = machine_info(
        tools={
            "rsync": ["rsync", "--version"],
            "openssh": ["ssh", "-V"],
            "sshd": ["/usr/sbin/sshd", "-V"],
        },
        packages=("ansible-core", "ansible-runner"),
    )
    # As a pip install would have it: bytecode for the runner's modules. A checkout's editable
    # install under PYTHONDONTWRITEBYTECODE=1 would compile ~4,500 lines on every CLI start.
    compileall.compile_dir(REPO_ROOT / "runner", quiet=1)
    # /tmp, not the repo: the sshd fixture relaxes StrictModes, and sockets need short paths.
    work = Path(tempfile.mkdtemp(prefix="extcomp-bench-"))
    os.environ["EXTCOMP_STATE_DIR"] = str(work / "state")  # never the user's own step records
    host: SshHost | None = None
    bench: Bench | None = None
    started = time.time()
    try:
        with sigterm_as_interrupt():
            progress.show("starting a private sshd on 127.0.0.1 ...")
            host = start_sshd(work / "sshd")
            bench = Bench(host, work, progress)
            if "a" in args.cases:
                case_a(bench, args.runs)
            if "b" in args.cases:
                case_b(bench, args.runs, sizes)
            if "c" in args.cases:
                case_c(bench, args.runs, sizes)
    except KeyboardInterrupt:
        progress.clear()
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        progress.clear()
        if bench is not None:
            for gated in (True, False):
                bench.close_master(gated)
        if host is not None:
            stop_sshd(host)
        shutil.rmtree(work, ignore_errors=True)
    assert bench is not None
    verdicts = compare(bench)
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(
        f"ssh_step benchmark, {args.runs} runs per side, both sides as processes, medians "
        "compared (ours/baseline)"
    )
    print(
        f"machine: {info['nproc']} cores, {info['cpu_model']}, kernel {info['kernel']}, "
        f"{info['openssh']}, {info['rsync']}, ansible-core {info['ansible-core']}; load "
        f"average {info['load_avg_at_start']} at start, {load_end} at the end"
    )
    print()
    print(table(bench, sizes, verdicts))
    json_path = None
    if not args.no_json:
        payload: dict[str, Any] = {
            "benchmark": "ssh_step",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "machine": {**info, "load_avg_at_end": load_end},
            "config": {
                "runs": args.runs,
                "quick": args.quick,
                "cases": args.cases,
                "sizes": sizes.__dict__,
            },
            "samples": [
                {"case": case, "variant": variant, **sm.to_dict()}
                for (case, variant), metrics in bench.samples.items()
                for sm in metrics.values()
            ],
            "verdicts": [v.__dict__ for v in verdicts],
        }
        json_path = write_json("ssh_step", payload)
    print()
    print(summary_line(verdicts, json_path))
    return 0 if all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
