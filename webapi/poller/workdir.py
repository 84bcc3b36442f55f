"""The per-calc work directory on the external host: layout, result collection and cleanup.

Layout of `<work_base>/<calc id>/`: `work/` is the program's cwd (inputs land there, and every
new or changed regular file in it becomes a result, stdout/stderr logs included); `exit.json` is
written by the wrapper when the program ends. Directories are kept after the run for inspection
and removed by `extcomp-poller cleanup --older-than DAYS`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from webapi.contract.calc import FileEntry
from webapi.contract.names import check_name, sha256_file
from webapi.contract.workfiles import STDERR_NAME, STDOUT_NAME
from webapi.errors import BadRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkDir:
    root: Path

    @classmethod
    def for_calc(cls, work_base: Path, key: str) -> WorkDir:
        if not key or "/" in key or key.startswith((".", "~")) or "\x00" in key:
            raise ValueError(f"unsafe calc id {key!r}")
        return cls(work_base / key)

    @property
    def cwd(self) -> Path:
        return self.root / "work"

    @property
    def exit_file(self) -> Path:
        return self.root / "exit.json"

    @property
    def stdout(self) -> Path:
        return self.cwd / STDOUT_NAME

    @property
    def stderr(self) -> Path:
        return self.cwd / STDERR_NAME

    def create(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True, mode=0o700)

    def reset(self) -> None:
        """Empty the work dir before a fresh run (a run that was lost half-way)."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.create()


class InputBudget:
    """How many input bytes this host takes for one calc: what its disk has above the reserve,
    and at most `cap` (0: no cap). `take(n)` raises ValueError once they would be exceeded."""

    def __init__(self, where: Path, min_free: int, cap: int = 0) -> None:
        room = shutil.disk_usage(where).free - min_free
        self.limit = max(0, min(room, cap) if cap else room)
        self.cap = cap
        self.used = 0

    def why(self, need: int) -> str:
        if self.cap and need > self.cap:
            return f"the inputs ({need} bytes) are over this host's max_input_bytes ({self.cap})"
        return (
            f"not enough space on the external host for the inputs: they need {need} bytes, "
            f"{self.limit} are free above its reserve"
        )

    def check(self, need: int) -> None:
        if need > self.limit:
            raise ValueError(self.why(need))

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ValueError(self.why(self.used))


def never_returns(name: str, patterns: Iterable[str]) -> bool:
    """Whether the relative path `name` is on the site's never-return list.

    A pattern with a '/' is matched against the whole path (and covers everything under a
    directory it names); one without matches any single part of the path, so `*.secret`
    catches `a/b/key.secret` and `licence` a file or a whole directory of that name.
    """
    parts = name.split("/")
    for pattern in patterns:
        pattern = pattern.strip("/")
        if "/" in pattern:
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + "/*"):
                return True
        elif any(fnmatch.fnmatchcase(part, pattern) for part in parts):
            return True
    return False


def collect_results(
    cwd: Path, inputs: Iterable[FileEntry], never_return: Iterable[str] = ()
) -> list[FileEntry]:
    """Every regular file under `cwd` except unchanged inputs and what the site never returns;
    symlinks and unsafe names skipped."""
    unchanged = {(i.name, i.size, i.sha256) for i in inputs}
    withheld = tuple(never_return)
    found: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(cwd, followlinks=False):
        dirnames.sort()
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            name = path.relative_to(cwd).as_posix()
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if not stat.S_ISREG(mode):
                log.warning("result %s is not a regular file; skipped", name)
                continue
            if never_returns(name, withheld):
                log.info("result %s withheld: it is on this site's never_return list", name)
                continue
            try:
                check_name(name)
            except BadRequest as exc:
                log.warning("result skipped: %s", exc.message)
                continue
            size = path.stat().st_size
            entry = FileEntry(name, size, sha256_file(path))
            if (entry.name, entry.size, entry.sha256) in unchanged:
                continue
            found.append(entry)
    return found


def cleanup(work_base: Path, older_than_days: float, keep: Iterable[str] = ()) -> list[Path]:
    """Remove calc dirs under `work_base` untouched for `older_than_days`, except ids in `keep`."""
    cutoff = time.time() - older_than_days * 86400
    keep_set = set(keep)
    removed: list[Path] = []
    if not work_base.is_dir():
        return removed
    for entry in sorted(work_base.iterdir()):
        if entry.name in keep_set or entry.is_symlink() or not entry.is_dir():
            continue
        newest = entry.stat().st_mtime
        for dirpath, _dirs, files in os.walk(entry):
            for name in files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
        if newest < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
