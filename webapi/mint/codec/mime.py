"""Name a file's type the way `file -i -b` prints it, split in its two words, without running it."""

from __future__ import annotations

import mimetypes
from typing import BinaryIO

SNIFF_BYTES = 8192
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"\x1f\x8b", "application/gzip"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x7fELF", "application/x-executable"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"\x89HDF\r\n\x1a\n", "application/x-hdf5"),
)


def _charset(head: bytes) -> str | None:
    """us-ascii / utf-8 for text, None for binary (a NUL, or bytes that are not UTF-8)."""
    if b"\x00" in head:
        return None
    if head.isascii():
        return "us-ascii"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still UTF-8.
        if exc.start < len(head) - 3:
            return None
    return "utf-8"


def sniff(fh: BinaryIO, name: str) -> tuple[str, str]:
    """(`mimetype1`, `mimetype2`) of an open file, e.g. ("text/plain;", "charset=us-ascii")."""
    head = fh.read(SNIFF_BYTES)
    if not head:
        return "inode/x-empty;", "charset=binary"
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return f"{mime};", "charset=binary"
    guessed = mimetypes.guess_type(name, strict=False)[0]
    charset = _charset(head)
    if charset is None:
        binary = guessed if guessed and not guessed.startswith("text/") else None
        return f"{binary or 'application/octet-stream'};", "charset=binary"
    text = guessed if guessed and guessed.startswith("text/") else "text/plain"
    return f"{text};", f"charset={charset}"
