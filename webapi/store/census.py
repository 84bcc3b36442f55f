"""Count calcs by site and state for a metrics scrape, re-reading only records that changed."""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from pathlib import Path

import yaml

_SITE_LINE = re.compile(r"^site: ([A-Za-z0-9._-]+)$", re.MULTILINE)
_STATE_LINE = re.compile(r"^state: ([a-z_]+)$", re.MULTILINE)
_Sig = tuple[int, int, int]  # (mtime_ns, size, inode) of a calc.yaml


class Census:
    """A scrape stats every calc.yaml (one stat each) but parses only those whose signature
    changed since the last scrape: it sees changes made by any process on the data dir (admin
    commands, retention), which an in-memory index of this process alone would miss."""

    def __init__(self, calcs_dir: Path) -> None:
        self.calcs_dir = calcs_dir
        self._seen: dict[str, tuple[_Sig, str, str]] = {}  # calc id -> (signature, site, state)

    def count(self) -> Counter[tuple[str, str]]:
        """(site, state) -> number of calcs, as the records on disk say now."""
        fresh: dict[str, tuple[_Sig, str, str]] = {}
        with contextlib.suppress(FileNotFoundError), os.scandir(self.calcs_dir) as it:
            for entry in it:
                path = Path(entry.path) / "calc.yaml"
                try:
                    st = path.stat()
                except OSError:
                    continue  # being created or removed right now
                sig = (st.st_mtime_ns, st.st_size, st.st_ino)
                known = self._seen.get(entry.name)
                if known is not None and known[0] == sig:
                    fresh[entry.name] = known
                    continue
                found = _site_and_state(path)
                if found is not None:  # a damaged record is the repair's business, not ours
                    fresh[entry.name] = (sig, *found)
        self._seen = fresh
        return Counter((site, state) for _sig, site, state in fresh.values())


def _site_and_state(path: Path) -> tuple[str, str] | None:
    """The record's top-level `site:` and `state:` lines (both plain words, never quoted), read
    without a YAML parse: ~50x faster on the first scrape of a big data dir; YAML on a surprise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    site = _SITE_LINE.search(text)
    state = _STATE_LINE.search(text)
    if site is not None and state is not None:
        return site.group(1), state.group(1)
    try:
        doc = yaml.safe_load(text)
        return str(doc["site"]), str(doc["state"])
    except (yaml.YAMLError, KeyError, TypeError):
        return None


def oldest_queued(queues_dir: Path) -> dict[str, float]:
    """Site -> when its longest-waiting queued calc was queued (epoch seconds), from the queue
    index alone: its entry names start with the queued time in microseconds."""
    out: dict[str, float] = {}
    for user_dir in queues_dir.glob("*/*"):
        with contextlib.suppress(OSError):
            stamps = [int(e.partition("-")[0]) for e in os.listdir(user_dir) if e[:1].isdigit()]
            if stamps:
                site = user_dir.parent.name
                first = min(stamps) / 1e6
                out[site] = min(out.get(site, first), first)
    return out
