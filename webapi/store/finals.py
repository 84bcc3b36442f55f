"""The index of final calcs beside the records, so opening a big store parses only what changed.

A final calc (succeeded, failed, cancelled) never changes again unless someone requeues it, and
a requeue rewrites its calc.yaml. So the owner remembers, per final calc, the signature of its
calc.yaml (mtime, size, inode: every write replaces the file, so all three change) and of its
directory (a temp file left there by a crashed write changes the directory's mtime), and writes
that list to `finals.json` when it opens the store, every few minutes and when it closes. The
next open skips a calc only when both signatures still match: anything written since, by any
process, crashed or not, is read and repaired as before. The index is never the truth a calc
can be found by: a missing, damaged or foreign file only means every record is read again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from webapi.fs import write_atomic

log = logging.getLogger(__name__)
FILE = "finals.json"
VERSION = 1
_Sig = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Final:
    """What opening needs of a final calc without reading it: its signatures, and its
    registration request (user, key) for the requests/ index, if it had one."""

    record: _Sig  # calc.yaml (mtime_ns, size, inode)
    folder: int  # the calc dir's mtime_ns
    user: str
    request_key: str | None


def signature(calc_dir: Path) -> tuple[_Sig, int] | None:
    """(calc.yaml's signature, the dir's mtime_ns), or None if either is missing."""
    try:
        st = os.stat(calc_dir / "calc.yaml")
        folder = os.stat(calc_dir).st_mtime_ns
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino), folder


def load(root: Path) -> dict[str, Final]:
    """The index as last written, or {} when there is none or it cannot be trusted."""
    path = root / FILE
    try:
        doc = json.loads(path.read_bytes())
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}, not {VERSION}")
        return {
            cid: Final((int(r[0]), int(r[1]), int(r[2])), int(f), str(u), k)
            for cid, (r, f, u, k) in doc["calcs"].items()
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("store: %s is unreadable (%s); every record is read instead", path, exc)
        return {}


def save(root: Path, finals: dict[str, Final]) -> None:
    """Write the index atomically (a crash leaves the old one, which is still safe to use)."""
    doc = {
        "version": VERSION,
        "calcs": {
            cid: [list(f.record), f.folder, f.user, f.request_key] for cid, f in finals.items()
        },
    }
    try:
        write_atomic(root / FILE, json.dumps(doc, separators=(",", ":")).encode())
    except OSError as exc:  # a cache: a failed write costs the next open time, nothing else
        log.warning("store: cannot write %s (%s); the next start reads every record", root, exc)
