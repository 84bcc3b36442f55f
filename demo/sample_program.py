"""Sample allow-listed program for the demo and tests: count lines, words and bytes of its inputs.

Usage: sample_program.py [--fail CODE] [--sleep SECONDS] [FILE...]
With no FILE it reads every regular file under the current directory (the calc's work dir),
skipping the extcomp logs, and writes `summary.txt` with one line per file plus a total.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sample_program")
    parser.add_argument("--fail", type=int, default=0, help="exit with this code after writing")
    parser.add_argument("--sleep", type=float, default=0.0, help="sleep first (for cancel demos)")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    if args.sleep:
        print(f"sleeping {args.sleep:g} s", flush=True)
        time.sleep(args.sleep)
    files = args.files or sorted(
        Path(root, name).relative_to(".")
        for root, _dirs, names in os.walk(".")
        for name in names
        if not name.startswith("extcomp-") and name != "summary.txt"
    )
    lines = []
    total = [0, 0, 0]
    for path in files:
        data = path.read_bytes()
        counts = (data.count(b"\n"), len(data.split()), len(data))
        total = [t + c for t, c in zip(total, counts, strict=True)]
        lines.append(f"{counts[0]:8d} {counts[1]:8d} {counts[2]:10d} {path.as_posix()}")
    lines.append(f"{total[0]:8d} {total[1]:8d} {total[2]:10d} total")
    Path("summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"summarised {len(files)} files", flush=True)
    if args.fail:
        print(f"failing on purpose with exit code {args.fail}", file=sys.stderr)
    return args.fail


if __name__ == "__main__":
    sys.exit(main())
