"""Write an upload's blocks to its file while a helper thread hashes them and the kernel starts
writing them out, so neither the sha256 nor the final fsync waits for the whole file."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
from typing import Any

from webapi.hashing import BackgroundHash

# Ask the kernel to start writing back every this many bytes (not a durability point: the
# final fsync is). Without it 1 GiB sits dirty in the page cache and the fsync that must come
# before the acknowledgement waits for all of it.
WRITEBACK_BYTES = 16 << 20
# Blocks handed to the hashing thread but not yet hashed: bounds the memory an upload holds.
QUEUE_BLOCKS = 2
_SYNC_FILE_RANGE_WRITE = 2


def _libc_sync_file_range() -> Any:
    """glibc's sync_file_range(2), or None where there is none (not Linux, or no glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _libc_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the file to disk without waiting for it (best effort)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class HashingWriter:
    """Append blocks to `fd` (at its current position) and feed them, in order, to a sha256
    that runs on a helper thread for a large body (webapi.hashing), so reading the socket,
    writing and hashing overlap. Always end with `hexdigest()` or `close()`."""

    def __init__(self, fd: int, digest: Any, start: int) -> None:
        self.fd = fd
        self._hash = BackgroundHash(digest, depth=QUEUE_BLOCKS)
        self._flushed = self._written = start

    def write(self, block: bytes) -> None:
        view = memoryview(block)
        while view:
            view = view[os.write(self.fd, view) :]
        self._hash.update(block)
        self._written += len(block)
        if self._written - self._flushed >= WRITEBACK_BYTES:
            start_writeback(self.fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def close(self) -> None:
        """Stop the hashing thread (after it has hashed everything queued)."""
        self._hash.close()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def hash_prefix(fd: int, size: int, chunk: int = 1 << 20) -> Any:
    """A sha256 object fed with the first `size` bytes of the file (a resumed upload's part)."""
    digest = hashlib.sha256()
    done = 0
    while done < size:
        block = os.pread(fd, min(chunk, size - done), done)
        if not block:
            break
        digest.update(block)
        done += len(block)
    return digest
