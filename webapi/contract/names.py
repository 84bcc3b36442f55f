"""Names that cross the wire: file names (checked, and mapped safely under a directory), site
names and command names."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from webapi.errors import BadRequest

# Site names travel in URL paths and become directory names in the store: keep them boring.
SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Commands are names compared exactly, never run by the server; '/' and a few more characters are
# allowed because the original ini lists commands as paths (e.g. /opt/mi/bin/run.sh).
COMMAND_RE = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9._+/=,:@%~-]{0,254}$")
MAX_PART_BYTES = 255
MAX_NAME_BYTES = 4096
# ASCII letters, digits and . _ + - ; any non-ASCII letter is allowed too (Japanese file names).
_PART_RE = re.compile(r"^[A-Za-z0-9._+\-\u00c0-\U0010ffff]+$")


def check_name(name: str) -> str:
    """Return `name` if it is a safe relative POSIX path, else raise BadRequest saying why."""
    if not isinstance(name, str) or not name:
        raise BadRequest("file name is empty: give a relative path such as 'data/in.txt'")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise BadRequest(f"file name is longer than {MAX_NAME_BYTES} bytes")
    if "\x00" in name or "\\" in name:
        raise BadRequest(f"file name {name!r} contains a NUL or backslash")
    if name.startswith("/"):
        raise BadRequest(f"file name {name!r} is absolute: give a path relative to the calc dir")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise BadRequest(f"file name {name!r} has an empty, '.' or '..' part")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES:
            raise BadRequest(f"file name {name!r} has a part longer than {MAX_PART_BYTES} bytes")
        if not _PART_RE.match(part):
            raise BadRequest(
                f"file name {name!r} has characters outside letters, digits and '._+-'"
            )
    return name


def safe_join(root: Path, name: str) -> Path:
    """Return root/name after checking the name and that no existing part of it is a symlink.

    Symlinks are refused rather than resolved so that a link planted inside a calc dir can never
    make us read or write outside it.
    """
    check_name(name)
    path = root
    for part in name.split("/"):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            raise BadRequest(f"file name {name!r} passes through a symbolic link; refused")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
