"""Feed a sha256 on a helper thread, so hashing a large stream costs the thread that reads and
writes it no time (hashlib drops the GIL for large buffers: the two run on two cores)."""

from __future__ import annotations

import hashlib
import queue
import threading
import weakref
from typing import Any

# Below this many bytes a thread costs more than it saves: small files are hashed inline.
THREAD_MIN_BYTES = 1 << 20


class BackgroundHash:
    """A sha256 of the blocks given to `update`, in order; inline until `THREAD_MIN_BYTES`
    have passed, then on a helper thread with at most `depth` blocks waiting (bounded memory).

    Blocks must not change after `update` (bytes, not a reused buffer). Always end with
    `hexdigest()` or `close()`: they stop the thread.
    """

    def __init__(self, digest: Any = None, *, depth: int = 4) -> None:
        self.digest = digest if digest is not None else hashlib.sha256()
        self._depth = depth
        self._inline = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, block: bytes) -> None:
        if self._queue is not None:
            self._queue.put(block)
            return
        self.digest.update(block)
        self._inline += len(block)
        if self._inline >= THREAD_MIN_BYTES:
            q: queue.Queue[bytes | None] = queue.Queue(maxsize=self._depth)
            self._queue = q
            self._thread = threading.Thread(
                target=_hash_loop, args=(q, self.digest), name="sha256", daemon=True
            )
            self._thread.start()
            # An owner dropped mid-stream (an error before close) still stops its thread.
            weakref.finalize(self, q.put, None)

    def close(self) -> None:
        """Wait until every block given so far is hashed, and stop the thread."""
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)  # the thread drains the queue: this waits at most `depth`
            self._thread.join()
        self._thread = self._queue = None

    def hexdigest(self) -> str:
        self.close()
        return str(self.digest.hexdigest())


def _hash_loop(blocks: queue.Queue[bytes | None], digest: Any) -> None:
    while (block := blocks.get()) is not None:
        digest.update(block)
