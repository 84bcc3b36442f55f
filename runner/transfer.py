"""Run one rsync and report its progress: the one piece of rsync handling that the runner (a push
sent beside ansible-playbook's start-up) and the extcomp_rsync action plugin (in ansible-playbook)
share, so both move data, parse rsync's output and write the progress file the same way.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

_PROGRESS_RE = re.compile(rb"^\s*([\d,]+)\s+(\d+)%\s+(\S+)\s+(\S+)")
_TOTAL_RE = re.compile(r"Total transferred file size: ([\d,]+) bytes")
_PROGRESS_EVERY_S = 0.2
# The rsync options both sides use: --stats for the byte count, progress2 for one line of
# overall progress (without incremental recursion, so its percentage is of the whole transfer).
RSYNC_OPTIONS = ("-a", "--stats", "--info=progress2", "--no-inc-recursive")
# A pull cut by a lost connection keeps the file it was receiving here; the next attempt sends
# only what is missing. rsync excludes the dir from the transfer itself and removes it once the
# pull is complete.
PARTIAL_DIR = ".extcomp-rsync-partial"


@dataclass(frozen=True, slots=True)
class Rsynced:
    """How one rsync ended: its exit code, what it printed, bytes moved, seconds taken."""

    rc: int
    stdout: str
    stderr: str
    bytes: int
    seconds: float


def rsync_remote(host: str, remote_dir: str) -> str:
    """HOST:DIR/ as rsync names a remote dir (an IPv6 address in brackets)."""
    return f"{f'[{host}]' if ':' in host else host}:{remote_dir.rstrip('/')}/"


def rsync_argv(
    direction: str,
    ssh: Sequence[str],
    remote: str,
    *,
    sources: Sequence[str] = (),
    dest: str = "",
    exclude: Sequence[str] = (),
) -> list[str]:
    """The rsync command line of a push (sources to remote) or a pull (remote to dest), with
    `ssh` as its -e command; remote is HOST:DIR/ as rsync names it."""
    argv = ["rsync", *RSYNC_OPTIONS, "-e", shlex.join(ssh)]
    for pattern in exclude:
        argv += ["--exclude", str(pattern)]
    if direction == "push":
        return [*argv, "--", *[str(s).rstrip("/") or "/" for s in sources], remote]
    return [*argv, f"--partial-dir={PARTIAL_DIR}", "--", remote, dest.rstrip("/") + "/"]


def total_bytes(stdout: str) -> int:
    """The transferred size rsync's --stats reports (0 when it printed none)."""
    total = _TOTAL_RE.search(stdout)
    return int(total.group(1).replace(",", "")) if total else 0


def run_rsync(
    argv: Sequence[str],
    progress_file: str | None,
    direction: str,
    started: subprocess.Popen[bytes] | None = None,
) -> Rsynced:
    """Run rsync (argv, or the process already `started` from it) to its end, writing the
    progress file (atomically, at most every 0.2 s) as its progress2 line changes."""
    began = time.monotonic()
    proc = started or subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout = cast(io.BufferedReader, proc.stdout)  # read1: what is there, without waiting for more
    out = bytearray()
    last = 0.0
    # rsync's progress2 line is rewritten with \r; split on both \r and \n.
    buf = b""
    while chunk := stdout.read1(65536):
        out += chunk
        if not progress_file:
            continue
        buf = (buf + chunk).replace(b"\n", b"\r")
        *lines, buf = buf.split(b"\r")
        now = time.monotonic()
        for line in reversed(lines):
            match = _PROGRESS_RE.match(line)
            if match and now - last >= _PROGRESS_EVERY_S:
                _write_progress(progress_file, direction, match)
                last = now
                break
    stderr = proc.stderr.read()
    rc = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    text = out.decode("utf-8", "replace")
    return Rsynced(
        rc, text, stderr.decode("utf-8", "replace"), total_bytes(text), time.monotonic() - began
    )


def _write_progress(path: str, direction: str, match: re.Match[bytes]) -> None:
    data = {
        "direction": direction,
        "bytes": int(match.group(1).replace(b",", b"")),
        "percent": int(match.group(2)),
        "rate": match.group(3).decode(),
        "eta": match.group(4).decode(),
    }
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".progress.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
