"""Crash-safe file writing for every side: one temp-name rule, atomic replace, locks, YAML files.

Every temporary file this package writes is named `~tmp-<random>` next to its target, written,
fsynced and renamed into place (then the directory is fsynced), so a crash leaves the old or the
new content and a leftover that `is_temp` recognises: `~` never starts a valid network file
name (webapi.contract.names), so repair can remove such leftovers without touching user files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from webapi.errors import ConfigError

TMP_PREFIX = "~tmp-"


def disk_full(exc: OSError) -> bool:
    """True for the errors a full disk or an exhausted quota gives."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def is_temp(name: str) -> bool:
    """True for a file name this package's atomic writes leave behind after a crash."""
    return name.startswith(TMP_PREFIX)


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside `path` (same directory, so the rename is atomic)."""
    return path.parent / f"{TMP_PREFIX}{secrets.token_hex(6)}"


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or create inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot fsync a directory; there is nothing more to do there.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Write `path` through a temp file: on a clean exit it is fsynced and renamed into place;
    on an error the temp file is removed and `path` is untouched."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new content."""
    with atomic_file(path, mode) as fh:
        fh.write(data)


# libyaml's emitter where PyYAML has it: every calc record write went through the pure-Python
# one, about half of the server's CPU per calc (poller rounds profile, issue 14).
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write_yaml_atomic(path: Path, doc: Any, mode: int = 0o644) -> None:
    text = yaml.dump(
        doc, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    write_atomic(path, text.encode("utf-8"), mode)


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read (created 0600, never briefly readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, text.encode("utf-8"), 0o600)


def read_yaml(path: Path) -> Any:
    with path.open("r", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_yaml_config(path: Path, what: str) -> Any:
    """Read a YAML config file; ConfigError names the file and, for bad syntax, the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the {what}: {why}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}; fix the syntax of the {what}") from None


class FileLock:
    """A re-entrant lock that holds both a thread lock and `flock` on a lock file.

    The thread lock orders threads of this process; flock orders processes sharing the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._rlock:
            if self._depth == 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None


class OwnerLock:
    """Makes this process the only one of its kind using a directory, for as long as it lives:
    an flock on `path`, with the holder's pid written in it for the refusal message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, what: str, fix: str) -> None:
        """Take the lock now or raise ConfigError naming the holder's pid, `what` it guards and
        `fix` (what the operator should do)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{what} is in use by another process (pid {holder}); {fix}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_locked(path: Path) -> bool:
    """True if another open file description holds an flock on `path` (a live writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
