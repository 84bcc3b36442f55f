"""Names of the files a work dir always has, known to every side, and reading a log's tail."""

from __future__ import annotations

import os
from pathlib import Path

# The program's stdout and stderr, kept in its cwd on the external host; they come back as
# results, so the client shows the stderr tail of a failed calc.
STDOUT_NAME = "extcomp-stdout.log"
STDERR_NAME = "extcomp-stderr.log"


def tail(path: Path, max_bytes: int = 2000) -> str:
    """The last bytes of a text file, decoded leniently; empty if missing."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
