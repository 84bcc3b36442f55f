"""Run one program and record its exit status in a file, so a restarted poller can still learn it.

Started by the executors as `python -m webapi.poller.executors.exitwrap EXIT_FILE -- ARGV...`
(in a new session, or as a batch job); it outlives a killed poller, and the exit file, written
atomically, is the program's outcome. It exits with the program's code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from webapi.fs import write_atomic
from webapi.poller.executors import exit_record


def _record(path: Path, data: dict[str, object]) -> None:
    """Replace the exit file; if the disk is full, overwrite the reserved one in place (it was
    made big enough before the program started), so the outcome is never lost."""
    content = exit_record(data)
    try:
        write_atomic(path, content)
    except OSError:
        with open(path, "r+b") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write(
            "usage: python -m webapi.poller.executors.exitwrap EXIT_FILE -- PROGRAM [ARGS...]\n"
        )
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
        why = f"cannot start {program[0]}: {exc.strerror}"
        _record(exit_file, {"exit_code": 127, "reason": why})
        return 127
    code = proc.wait()
    # A signal death is reported the way shells do: 128 + signal number.
    exit_code = code if code >= 0 else 128 - code
    result: dict[str, object] = {"exit_code": exit_code}
    if code < 0:
        result["reason"] = f"the program was killed by signal {signal.Signals(-code).name}"
    _record(exit_file, result)
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
