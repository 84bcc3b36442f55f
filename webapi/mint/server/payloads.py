"""Files inside the original protocol's request bodies: decoded from base64 into a private staging
dir as the body arrives (counted against the quota), and answers streamed with their files."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from webapi.errors import BadRequest, TooLarge
from webapi.fs import TMP_PREFIX
from webapi.mint.codec.b64 import BadContent, FileSink
from webapi.mint.codec.bodies import Piece, body_length, iter_body
from webapi.mint.codec.jsonstream import JsonError, SinkFor, StreamParser
from webapi.server.routing import Stream
from webapi.store.sink import start_writeback


class Budget:
    """Decoded bytes allowed for one request (the per-calc quota); 0 = unlimited."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what, self.used = limit, what, 0

    def take(self, n: int) -> None:
        self.used += n
        if self.limit and self.used > self.limit:
            raise TooLarge(
                f"{self.what}: the files are over the quota of {self.limit} bytes; "
                "nothing was stored"
            )


class Staging:
    """A private temp dir in the data dir for one request's decoded files; always removed."""

    def __init__(self, data_dir: Path, budget: Budget) -> None:
        self.dir = data_dir / "mint-staging" / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        self.budget = budget
        self._sinks: list[FileSink] = []

    def __enter__(self) -> Staging:
        self.dir.mkdir(parents=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for sink in self._sinks:
            sink.abort()
        shutil.rmtree(self.dir, ignore_errors=True)

    def sink(self, label: str) -> FileSink:
        # Staged names are counters, never the client's names: those are checked separately.
        path = self.dir / f"{TMP_PREFIX}{len(self._sinks)}"
        # Written back as it arrives: adopt_file's fsync (before the answer) then waits for little.
        sink = FileSink(path, label, take=self.budget.take, writeback=start_writeback)
        self._sinks.append(sink)
        return sink


def parse_body(read: Callable[[int], bytes], sink_for: SinkFor) -> dict[str, Any]:
    """Parse a JSON object body, streaming the strings `sink_for` picks; BadRequest if bad."""
    try:
        doc = StreamParser(read, sink_for).parse()
    except (JsonError, BadContent) as exc:
        raise BadRequest(f"{exc}; nothing stored") from None
    if not isinstance(doc, dict):
        raise BadRequest("the JSON body must be an object")
    return doc


def stream_json(pieces: list[Piece], on_sent: Callable[[], None] | None = None) -> Stream:
    """An answer made of JSON text and base64'd files, produced while it is sent; `on_sent`
    runs once its last byte has been handed to the connection (not if the send broke)."""
    headers = (("Content-Type", "application/json; charset=utf-8"),)

    def chunks() -> Iterator[bytes]:
        yield from iter_body(pieces)
        if on_sent is not None:
            on_sent()

    return Stream(chunks(), body_length(pieces), 200, headers)


def remove_stale_staging(data_dir: Path, idle_seconds: float = 3600) -> None:
    """Remove staging dirs left by a crash: nothing written in them for `idle_seconds` (a live
    upload keeps its files' mtimes fresh; another server process may share the data dir)."""
    root = data_dir / "mint-staging"
    if not root.is_dir():
        return
    now = time.time()
    for entry in root.iterdir():
        with contextlib.suppress(OSError):
            times = [entry.stat().st_mtime] + [f.stat().st_mtime for f in entry.iterdir()]
            if now - max(times) > idle_seconds:
                shutil.rmtree(entry, ignore_errors=True)
