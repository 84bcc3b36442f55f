"""Benchmark one SSH-mode step: our runner (run_step) against a hand-written ssh + rsync script.

In one run against a private sshd on 127.0.0.1 (tests/fixtures/sshd.py) it measures, interleaving
our runner and bench/baseline_ssh_step.sh run by run:

  a  an empty step (no inputs, the entry script does nothing): ours through the gated key and
     through the unrestricted key, each with a cold ssh connection; also gated with the
     ControlMaster connection of the previous step still up (what back-to-back steps see)
  b  256 MiB in, the program writes 256 MiB (`write out.bin 256`) and computes 1 s (`sleep 1`)
  c  1 GiB in, the program copies it to out.bin, which is pulled back: push/pull MiB/s

The inputs are excluded from the pull on both sides (`--exclude in.bin`), so "out" is what the
program made. Ours runs in this process, as a caller of the Python API would (no interpreter or
import start-up counted); the baseline runs as a bash script in a subprocess. Every run is
checked (exit code 0, out.bin of the right size came back) so a fast failure never counts.

    .venv/bin/python bench/ssh_step.py             # full: 5 runs per case (~6 minutes)
    .venv/bin/python bench/ssh_step.py --quick     # small sizes, 2 runs: a smoke test
    .venv/bin/python bench/ssh_step.py --runs 9 --cases a,b

Prints a table (min/median per case, ratio ours/baseline against the targets) and writes JSON
to bench/results/ssh_step-<timestamp>.json.
"""

from __future__ import annotations

import argparse
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

# Targets the runner must meet (docs/performance.md): (a) within 1 s, (b) <= 1.10x the time,
# (c) >= 0.95x the throughput of the hand-written baseline.
TARGET_A_EXTRA_S = 1.0
TARGET_B_RATIO = 1.10
TARGET_C_RATIO = 0.95


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
    """One timed step: wall seconds and the push/pull seconds it reported."""

    total: float
    push: float = 0.0
    pull: float = 0.0


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

    def ours(
        self,
        inputs: tuple[Path, ...],
        args: tuple[str, ...],
        *,
        gated: bool = True,
        cold: bool = True,
        out_mib: int | None = None,
    ) -> Run:
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
        return Run(total, result.seconds.get("push", 0.0), result.seconds.get("pull", 0.0))

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
        started = time.monotonic()
        out = subprocess.run(
            argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
        total = time.monotonic() - started
        if out.returncode != 0:
            raise RuntimeError(f"baseline failed (rc {out.returncode}): {out.stderr.strip()}")
        phases: dict[str, float] = {}
        for line in out.stdout.splitlines():
            name, start, end = line.split()
            phases[name] = float(end) - float(start)
        check_output(results, out_mib)
        shutil.rmtree(results)
        return Run(total, phases.get("push", 0.0), phases.get("pull", 0.0))


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


def case_a(bench: Bench, runs: int) -> None:
    for i, ours_first in interleaved(runs):
        order = ["ours", "base"] if ours_first else ["base", "ours"]
        for who in order:
            bench.progress.show(f"a empty step: run {i + 1}/{runs} {who}")
            if who == "base":
                bench.record("a", "baseline", "total", bench.baseline((), ()).total)
            else:
                bench.record("a", "ours gated", "total", bench.ours((), ()).total)
                # Right after a step its master connection is still up (ControlPersist).
                warm = bench.ours((), (), cold=False).total
                bench.record("a", "ours gated, warm", "total", warm)
                bench.record("a", "ours plain", "total", bench.ours((), (), gated=False).total)


def case_b(bench: Bench, runs: int, sizes: Sizes) -> None:
    inp = make_input(bench.work / "in-b" / "in.bin", sizes.b_in_mib)
    args = ("write", "out.bin", str(sizes.b_out_mib), "sleep", f"{sizes.b_sleep_s:g}")
    for i, ours_first in interleaved(runs):
        for who in ["ours", "base"] if ours_first else ["base", "ours"]:
            bench.progress.show(f"b data step: run {i + 1}/{runs} {who}")
            if who == "base":
                run, variant = bench.baseline((inp,), args, out_mib=sizes.b_out_mib), "baseline"
            else:
                run, variant = bench.ours((inp,), args, out_mib=sizes.b_out_mib), "ours gated"
            bench.record("b", variant, "total", run.total)
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
                run, variant = bench.ours((inp,), args, out_mib=sizes.c_mib), "ours gated"
            bench.record("c", variant, "push", sizes.c_mib / run.push, "MiB/s")
            bench.record("c", variant, "pull", sizes.c_mib / run.pull, "MiB/s")
            both = 2 * sizes.c_mib / (run.push + run.pull)
            bench.record("c", variant, "push+pull", both, "MiB/s")
            bench.record("c", variant, "total", run.total)
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
    """Each target, from medians: (a) seconds over baseline, (b) time ratio, (c) rate ratio."""
    verdicts: list[Verdict] = []
    s = bench.samples
    if ("a", "baseline") in s:
        base = s["a", "baseline"]["total"].median
        for variant in ("ours gated", "ours plain"):
            extra = s["a", variant]["total"].median - base
            verdicts.append(
                Verdict(
                    "a",
                    variant,
                    f"{extra:+.2f} s (<= +{TARGET_A_EXTRA_S:g} s)",
                    extra <= TARGET_A_EXTRA_S,
                    extra,
                )
            )
    if ("b", "baseline") in s:
        ratio = s["b", "ours gated"]["total"].median / s["b", "baseline"]["total"].median
        verdicts.append(
            Verdict(
                "b",
                "total",
                f"{ratio:.2f}x (<= {TARGET_B_RATIO:.2f}x)",
                ratio <= TARGET_B_RATIO,
                ratio,
            )
        )
    if ("c", "baseline") in s:
        for metric in ("push", "pull", "push+pull"):
            ratio = s["c", "ours gated"][metric].median / s["c", "baseline"][metric].median
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
            verdict = None
            if variant != "baseline":
                verdict = by_key.get((case, variant)) if case == "a" else by_key.get((case, metric))
                if case == "c" and metric == "total":
                    verdict = None
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
                    ("ok" if verdict.ok else "MISSED") if verdict else "",
                ]
            )
    # Baseline first within a case/metric, so each "ours" row sits under what it is compared to.
    order = {"baseline": 0}
    rows.sort(key=lambda r: (r[0], r[2] != "total", r[2], order.get(r[1], 1), r[1]))
    headers = ["case", "variant", "metric", "unit", "n", "min", "median", "vs baseline", "target"]
    return format_table(headers, rows, left=3)


def summary_line(verdicts: list[Verdict], json_path: Path | None) -> str:
    parts = []
    for v in verdicts:
        label = f"{v.case} {v.metric}".replace("a ours ", "a ")
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
    print(f"ssh_step benchmark, {args.runs} runs per side, medians compared (ours/baseline)")
    print(
        f"machine: {info['nproc']} cores, {info['cpu_model']}, kernel {info['kernel']}, "
        f"{info['openssh']}, {info['rsync']}, ansible-core {info['ansible-core']}"
    )
    print()
    print(table(bench, sizes, verdicts))
    json_path = None
    if not args.no_json:
        payload: dict[str, Any] = {
            "benchmark": "ssh_step",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "machine": info,
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
