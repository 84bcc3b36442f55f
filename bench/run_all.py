"""Run every benchmark, each in its own process, even when an earlier one misses its targets.

`make bench` calls this: one benchmark that misses a target (exit 1) or fails must not hide the
others' numbers. Each script prints its own table and writes its own JSON; this prints one
summary table at the end and exits 1 if any benchmark missed or failed.

    python bench/run_all.py [--quick] [--only ssh_step,webapi_mode,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, format_table  # found through the sys.path line above

BENCHMARKS = ("ssh_step", "webapi_mode", "mint_compat", "store_scale", "poller_rounds")
# Each script's own form of "small sizes, a smoke test".
QUICK = {
    "ssh_step": ["--quick"],
    "webapi_mode": ["--quick"],
    "mint_compat": ["--size-mib", "16"],
    "store_scale": ["--quick"],
    "poller_rounds": ["--quick"],
}


@dataclass(frozen=True)
class Outcome:
    name: str
    exit_code: int
    seconds: float

    @property
    def verdict(self) -> str:
        if self.exit_code == 0:
            return "met"
        if self.exit_code == 1:
            return "MISSED a target"
        if self.exit_code == 130:
            return "interrupted"
        return f"FAILED (exit {self.exit_code})"


def run_one(name: str, args: Sequence[str], bench_dir: Path = BENCH_DIR) -> Outcome:
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(bench_dir / f"{name}.py"), *args], check=False)
    return Outcome(name, done.returncode, time.monotonic() - started)


def run_all(names: Sequence[str], quick: bool, bench_dir: Path = BENCH_DIR) -> int:
    outcomes: list[Outcome] = []
    for name in names:
        args = QUICK.get(name, ["--quick"]) if quick else []
        print(f"== bench/{name}.py {' '.join(args)}".rstrip(), flush=True)
        outcome = run_one(name, args, bench_dir)
        outcomes.append(outcome)
        if outcome.exit_code == 130:
            break  # Ctrl-C: the user wants to stop, not the next benchmark
    rows = [[o.name, o.verdict, f"{o.seconds:.0f} s"] for o in outcomes]
    print()
    print(format_table(["benchmark", "targets", "time"], rows))
    bad = [o.name for o in outcomes if o.exit_code != 0]
    skipped = [n for n in names if n not in {o.name for o in outcomes}]
    summary = f"bench: {len(outcomes) - len(bad)} of {len(names)} met their targets"
    if bad:
        summary += f"; missed or failed: {', '.join(bad)}"
    if skipped:
        summary += f"; not run: {', '.join(skipped)}"
    print(summary)
    return 0 if not bad and not skipped else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of each")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {', '.join(BENCHMARKS)}",
    )
    ns = parser.parse_args(argv)
    names = [n.strip() for n in ns.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        parser.error(f"--only: unknown benchmark {unknown!r}; choose from {', '.join(BENCHMARKS)}")
    return run_all(names, ns.quick)


if __name__ == "__main__":
    sys.exit(main())
