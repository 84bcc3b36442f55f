"""Run one program and record its exit status in a file, so a restarted poller can still learn it.

Started by the local executor as `python -m webapi.runwrap EXIT_FILE -- ARGV...` in a new session;
it outlives a killed poller, and the exit file (written atomically) is the program's outcome.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def _write(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m webapi.runwrap EXIT_FILE -- PROGRAM [ARGS...]\n")
        return 2
    exit_file, program = Path(argv[0]), argv[2:]
    # A stop (SIGTERM to the process group) is meant for the program; this wrapper stays to
    # record how the program ended. Handlers, unlike SIG_IGN, are reset in the exec'd child.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGHUP, lambda *_: None)
    try:
        proc = subprocess.Popen(program, stdin=subprocess.DEVNULL)
    except OSError as exc:
        sys.stderr.write(f"extcomp: cannot start {program[0]}: {exc.strerror}\n")
        _write(
            exit_file, {"exit_code": 127, "reason": f"cannot start {program[0]}: {exc.strerror}"}
        )
        return 127
    while True:
        try:
            code = proc.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
    # A signal death is reported the way shells do: 128 + signal number.
    result: dict[str, object] = {"exit_code": code if code >= 0 else 128 - code}
    if code < 0:
        result["reason"] = f"the program was killed by signal {signal.Signals(-code).name}"
    _write(exit_file, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
