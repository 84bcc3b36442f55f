"""The index of final calcs beside the records, so opening a big store parses only what changed.

A final calc (succeeded, failed, cancelled) never changes again unless someone requeues it, and
a requeue rewrites its calc.yaml. So the owner remembers, per final calc, the signature of its
calc.yaml (mtime, size, inode: every write replaces the file, so all three change) and of its
directory (a temp file left there by a crashed write changes the directory's mtime), and writes
that list to `finals.json` when it opens the store, every few minutes and when it closes. The
next open skips a calc only when both signatures still match: anything written since, by any
process, crashed or not, is read and repaired as before. The index is never the truth a calc
can be found by: a missing, damaged or foreign file only means every record is read again.

Each entry also carries the calc's site, state and end time (version 2), so the metrics census,
the status page's per-site counts and retention's purge count and judge the final calcs it
vouches for without parsing their records; the same signature check decides whether an entry
may be used, and a calc it cannot vouch for is read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webapi import calcs
from webapi.calcs import Calc
from webapi.fs import write_atomic

log = logging.getLogger(__name__)
FILE = "finals.json"
VERSION = 2
READABLE = (1, 2)  # version 1 entries lack site, state and end time: those calcs are read
_Sig = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Final:
    """What opening needs of a final calc without reading it: its signatures, and its
    registration request (user, key) for the requests/ index, if it had one."""

    record: _Sig  # calc.yaml (mtime_ns, size, inode)
    folder: int  # the calc dir's mtime_ns
    user: str
    request_key: str | None
    site: str | None = None  # None: written by version 1, the record must be read for it
    state: str | None = None
    ended: float | None = None  # the calc's `updated` (when it reached its final state)

    @property
    def summary(self) -> tuple[str, str, float] | None:
        """(site, state, ended) if this entry carries them."""
        if self.site is None or self.state is None or self.ended is None:
            return None
        return self.site, self.state, self.ended


def of_calc(sig: tuple[_Sig, int], calc: Calc) -> Final:
    """The index entry of a final calc just written or read, with its signature `sig`."""
    key = None if calc.request_id is None else calcs.request_key(calc.request_id)
    return Final(sig[0], sig[1], calc.user, key, calc.site, str(calc.state), calc.updated)


def vouched(root: Path, known: Mapping[str, Final], calc_id: str) -> Final | None:
    """`known`'s entry for `calc_id` if its calc.yaml is still the one it was made from (its
    signature matches: a rewrite by any process changes it), else None: read the record."""
    got = known.get(calc_id)
    if got is None:
        return None
    try:
        st = os.stat(f"{root}/calcs/{calc_id}/calc.yaml")  # a str: cheaper than Path joins
    except OSError:
        return None
    return got if (st.st_mtime_ns, st.st_size, st.st_ino) == got.record else None


def signature(calc_dir: Path | str) -> tuple[_Sig, int] | None:
    """(calc.yaml's signature, the dir's mtime_ns), or None if either is missing."""
    try:
        st = os.stat(f"{calc_dir}/calc.yaml")
        folder = os.stat(calc_dir).st_mtime_ns
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino), folder


def load(root: Path) -> dict[str, Final]:
    """The index as last written, or {} when there is none or it cannot be trusted."""
    path = root / FILE
    try:
        doc = json.loads(path.read_bytes())
        if doc.get("version") not in READABLE:
            raise ValueError(f"version {doc.get('version')!r}, not one of {READABLE}")
        return {cid: _entry(row) for cid, row in doc["calcs"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("store: %s is unreadable (%s); every record is read instead", path, exc)
        return {}


def _entry(row: list[Any]) -> Final:
    r, f, u, k = row[:4]
    sig = (int(r[0]), int(r[1]), int(r[2]))
    if k is not None and not isinstance(k, str):
        raise TypeError(f"request key {k!r}")
    if len(row) == 4:  # version 1
        return Final(sig, int(f), str(u), k)
    site, state, ended = row[4:]
    return Final(sig, int(f), str(u), k, str(site), str(state), float(ended))


def save(root: Path, finals: dict[str, Final]) -> None:
    """Write the index atomically (a crash leaves the old one, which is still safe to use)."""
    doc = {
        "version": VERSION,
        "calcs": {
            cid: [list(f.record), f.folder, f.user, f.request_key, f.site, f.state, f.ended]
            for cid, f in finals.items()
        },
    }
    try:
        write_atomic(root / FILE, json.dumps(doc, separators=(",", ":")).encode())
    except OSError as exc:  # a cache: a failed write costs the next open time, nothing else
        log.warning("store: cannot write %s (%s); the next start reads every record", root, exc)
